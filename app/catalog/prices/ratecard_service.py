"""The stored rate card: replace it whole (a new catalog version), read its lines."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.catalog.loader import load_catalog
from app.catalog.prices.ratecard import RateCardError, RateLineIn
from app.estimator.catalog_types import UnknownGpuError
from app.models import CatalogVersion, RateCardLine
from app.models.base import utcnow


def replace_card(
    session: Session, *, lines: Sequence[RateLineIn], uploaded_by: str
) -> tuple[list[RateLineIn], int]:
    """Swap the whole card for `lines` (GPU aliases resolved) and add a catalog version."""
    catalog = load_catalog()
    resolved = []
    for i, line in enumerate(lines):
        if line.gpu is None:
            resolved.append(line)
            continue
        try:
            resolved.append(line.model_copy(update={"gpu": catalog.resolve_gpu_id(line.gpu)}))
        except UnknownGpuError as exc:
            raise RateCardError(str(exc), field=f"lines[{i}].gpu") from None
    now = utcnow()
    session.execute(delete(RateCardLine))
    session.add_all(
        RateCardLine(**line.model_dump(), uploaded_by=uploaded_by[:100], uploaded_at=now)
        for line in resolved
    )
    version = CatalogVersion(note=f"rate card of {len(resolved)} lines by {uploaded_by}"[:500])
    version.created_at = now
    session.add(version)
    session.flush()
    return resolved, version.id


def lines(session: Session) -> list[RateLineIn]:
    """Every line of the stored card."""
    fields = RateLineIn.model_fields
    return [
        RateLineIn.model_validate({k: getattr(row, k) for k in fields})
        for row in session.scalars(select(RateCardLine).order_by(RateCardLine.id))
    ]
