"""Price-list imports: list them (read scope), import a provider document (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status

from app.auth.deps import AdminPrincipal, ReadPrincipal
from app.catalog.prices import service
from app.catalog.prices.importers import PriceImportError
from app.catalog.prices.schemas import PriceImportList, PriceImportOut
from app.catalog.schemas import PROVIDER_PATTERN
from app.db import SessionDep
from app.errors import InvalidInput
from app.kit.instants import UtcInstant
from app.models import PriceImport
from app.models.base import utcnow

router = APIRouter(prefix="/v1/catalog/price-imports", tags=["catalog"])


def _out(row: PriceImport) -> PriceImportOut:
    return PriceImportOut(
        id=row.id,
        provider=row.provider,
        source=row.source,
        fetched_at=row.fetched_at,
        rows=row.rows,
        catalog_version=row.catalog_version_id,
        imported_by=row.imported_by,
        created_at=row.created_at,
    )


@router.get("", response_model=PriceImportList)
def list_imports(session: SessionDep, _: ReadPrincipal) -> PriceImportList:
    """Every provider price-list import, newest first."""
    return PriceImportList(imports=[_out(r) for r in service.list_(session)])


@router.post("", response_model=PriceImportOut, status_code=status.HTTP_201_CREATED)
def create_import(
    doc: Annotated[dict[str, Any], Body(description="the provider's price-list document")],
    session: SessionDep,
    principal: AdminPrincipal,
    source: Annotated[str, Query(min_length=1, max_length=400, pattern=r"^[^\x00-\x1f\x7f]+$")],
    provider: Annotated[str | None, Query(pattern=PROVIDER_PATTERN)] = None,
    fetched_at: UtcInstant | None = None,
) -> PriceImportOut:
    """Import a price list as a new catalog version; malformed or partial: 422, nothing changes."""
    try:
        row = service.refresh(
            session,
            doc=doc,
            provider=provider,
            source=source,
            fetched_at=fetched_at or utcnow(),
            imported_by=f"key {principal.key_id}",
        )
    except PriceImportError as exc:
        detail = f"price list not imported, nothing changed: {exc}"
        raise InvalidInput(detail, field="body" + (f".{exc.field}" if exc.field else "")) from None
    return _out(row)
