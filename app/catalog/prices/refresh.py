"""Fetch and import every provider's price list: `tunecost prices refresh` and the beat task."""

from __future__ import annotations

from typing import Any

import httpx

from app.catalog.prices import service
from app.catalog.prices.fetch import FETCHERS
from app.catalog.prices.importers import PriceImportError
from app.db import session_scope
from app.models.base import utcnow


def import_document(doc: Any, *, provider: str | None, source: str, imported_by: str) -> str:
    """Import one price-list document as a new catalog version (its own transaction).

    Returns what was imported, in words; raises PriceImportError, nothing changed, when the
    document is refused.
    """
    with session_scope() as session:
        row = service.refresh(
            session,
            doc=doc,
            provider=provider,
            source=source,
            fetched_at=utcnow(),
            imported_by=imported_by,
        )
        return (
            f"imported {row.rows} {row.provider} per-GPU prices from {source}: "
            f"catalog version {row.catalog_version_id}"
        )


def refresh_all(providers: list[str] | None = None) -> dict[str, str]:
    """Fetch and import each provider (its own transaction); what happened to each, in words."""
    outcome: dict[str, str] = {}
    for name in providers or sorted(FETCHERS):
        try:
            doc, url = FETCHERS[name]()
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:  # network, API, not JSON
            outcome[name] = f"not fetched, nothing changed: {type(exc).__name__}: {exc}"
            continue
        try:
            outcome[name] = import_document(doc, provider=name, source=url, imported_by="refresh")
        except PriceImportError as exc:
            outcome[name] = f"not imported, nothing changed: {exc}"
    return outcome
