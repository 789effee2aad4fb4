"""Price imports in the database: store one as a new catalog version, read the newest per provider.

The document is parsed in full (app/catalog/prices/importers) before anything is written, and
the rows, the import and its catalog version are added in the caller's transaction: a malformed or
partial document raises before the first write, and a failed commit leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog.prices import importers
from app.estimator.catalog_types import PRICING_KINDS, PriceRow
from app.models import CatalogVersion, ImportedPrice, PriceImport
from app.models.base import utcnow

MAX_SOURCE_CHARS = 500  # the width of price_imports.source and imported_prices.source


def refresh(
    session: Session,
    *,
    doc: Any,
    provider: str | None,
    source: str,
    fetched_at: datetime,
    imported_by: str,
) -> PriceImport:
    """Parse `doc` (PriceImportError when malformed or partial) and store it (flush only)."""
    name, rows = importers.parse(doc, provider=provider, fetched_at=fetched_at, source=source)
    return create(
        session,
        provider=name,
        rows=rows,
        source=source,
        fetched_at=fetched_at,
        imported_by=imported_by,
    )


def create(
    session: Session,
    *,
    provider: str,
    rows: Sequence[PriceRow],
    source: str,
    fetched_at: datetime,
    imported_by: str,
) -> PriceImport:
    """Store parsed rows as an import of `provider` with a new catalog version (flush only)."""
    version = CatalogVersion(
        note=f"{len(rows)} {provider} prices imported from {source}"[:MAX_SOURCE_CHARS],
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    row = PriceImport(
        provider=provider,
        source=source[:MAX_SOURCE_CHARS],
        fetched_at=fetched_at,
        rows=len(rows),
        catalog_version_id=version.id,
        imported_by=imported_by[:100],
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    session.add_all(
        ImportedPrice(
            import_id=row.id,
            provider=r.provider,
            gpu=r.gpu,
            pricing=r.pricing,
            usd_per_gpu_hour=r.usd_per_gpu_hour,
            instance=r.instance,
            gpus_per_instance=r.gpus_per_instance,
            region=r.region,
            as_of=r.as_of,
            source=r.source[:MAX_SOURCE_CHARS],
        )
        for r in rows
    )
    session.flush()
    return row


def newest_rows(session: Session) -> dict[str, list[PriceRow]]:
    """The rows of each provider's newest import."""
    newest = select(func.max(PriceImport.id)).group_by(PriceImport.provider).scalar_subquery()
    out: dict[str, list[PriceRow]] = {}
    query = select(ImportedPrice).where(ImportedPrice.import_id.in_(newest))
    for r in session.scalars(query.order_by(ImportedPrice.id)):
        out.setdefault(r.provider, []).append(
            PriceRow(
                provider=r.provider,
                gpu=r.gpu,
                pricing=next(k for k in PRICING_KINDS if k == r.pricing),
                usd_per_gpu_hour=r.usd_per_gpu_hour,
                as_of=r.as_of,
                source=r.source,
                instance=r.instance,
                gpus_per_instance=r.gpus_per_instance,
                region=r.region,
                origin="import",
            )
        )
    return out


def list_(session: Session) -> Sequence[PriceImport]:
    """Every import, newest first."""
    return session.scalars(select(PriceImport).order_by(PriceImport.id.desc())).all()
