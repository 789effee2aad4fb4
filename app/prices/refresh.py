"""Fetch and import every provider's price list: `tunecost prices refresh` and the beat task."""

from __future__ import annotations

import httpx

from app.db import session_scope
from app.models.base import utcnow
from app.prices import service
from app.prices.fetch import FETCHERS
from app.prices.importers import PriceImportError


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
            with session_scope() as session:
                row = service.refresh(
                    session,
                    doc=doc,
                    provider=name,
                    source=url,
                    fetched_at=utcnow(),
                    imported_by="refresh",
                )
                version = row.catalog_version_id
                outcome[name] = f"imported {row.rows} prices: catalog version {version}"
        except PriceImportError as exc:
            outcome[name] = f"not imported, nothing changed: {exc}"
    return outcome
