"""Provider price-list importers: each turns one published document into per-GPU catalog rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from app.catalog.prices.importers import aws, azure, gcp, gpu_list, lambda_cloud
from app.catalog.prices.importers.common import PriceImportError
from app.estimator.catalog_types import PriceRow

Parser = Callable[..., list[PriceRow]]
PARSERS: dict[str, Parser] = {
    aws.PROVIDER: aws.parse,
    azure.PROVIDER: azure.parse,
    gcp.PROVIDER: gcp.parse,
    lambda_cloud.PROVIDER: lambda_cloud.parse,
}


def detect(doc: Any) -> str:
    """The provider whose documented shape `doc` has; `PriceImportError` when none matches."""
    if isinstance(doc, Mapping):
        if doc.get("format") == gpu_list.FORMAT:
            return str(doc.get("provider"))
        if doc.get("offerCode") == aws.OFFER_CODE:
            return aws.PROVIDER
        if "Items" in doc and "BillingCurrency" in doc:
            return azure.PROVIDER
        if "skus" in doc:
            return gcp.PROVIDER
        if isinstance(doc.get("data"), Mapping):
            return lambda_cloud.PROVIDER
    raise PriceImportError(
        "the document is none of the known price lists (AWS EC2 offer file, Azure Retail "
        "Prices page, Google Cloud Billing Catalog SKUs, Lambda instance types, "
        f"{gpu_list.FORMAT}); name the "
        f"provider ({', '.join(sorted(PARSERS))})"
    )


def parse(
    doc: Any, *, provider: str | None, fetched_at: datetime, source: str
) -> tuple[str, list[PriceRow]]:
    """The provider and its per-GPU rows from `doc`; raises `PriceImportError` saying why not."""
    if isinstance(doc, Mapping) and doc.get("format") == gpu_list.FORMAT:
        rows = gpu_list.parse(doc, fetched_at=fetched_at, source=source)
        if provider is not None and rows[0].provider != provider:
            raise PriceImportError(f"the list is {rows[0].provider}'s, not {provider}'s")
        return rows[0].provider, rows
    name = provider or detect(doc)
    if name not in PARSERS:
        raise PriceImportError(
            f"no importer for provider {name!r}; known: {sorted(PARSERS)}, or any provider's "
            f"list in the {gpu_list.FORMAT} format"
        )
    if not isinstance(doc, Mapping):
        raise PriceImportError(f"a {name} price list is a JSON object, got {type(doc).__name__}")
    return name, PARSERS[name](doc, fetched_at=fetched_at, source=source)


__all__ = ["PARSERS", "PriceImportError", "detect", "parse"]
