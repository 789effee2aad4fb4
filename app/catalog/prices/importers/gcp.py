"""Google Cloud Billing Catalog API (services/{id}/skus): Compute Engine GPU SKUs per region.

Format: Cloud Billing docs, "Get Google Cloud pricing information" (catalog API,
https://cloud.google.com/billing/v1/how-tos/catalog-api) and the `Sku` reference
(https://cloud.google.com/billing/docs/reference/rest/v1/services.skus/list): `{"skus": [...],
"nextPageToken"}`; each SKU has `description`, `category` (resourceFamily, resourceGroup,
usageType: OnDemand, Preemptible, Commit1Yr, ...), `serviceRegions` and `pricingInfo[]` whose
`pricingExpression.tieredRates[].unitPrice` is `units` + `nanos` / 1e9 per `usageUnit` ("h").
GPU SKUs are priced per GPU and exclude the VM's vCPUs and memory (billed by other SKUs), so
these per-GPU prices are lower than the seed's, which include the host VM. A page with a
`nextPageToken` is partial and refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.catalog.prices.importers.common import (
    InstanceGpus,
    PriceImportError,
    check_rows,
    instances_of,
    need,
    per_gpu_row,
    usd,
)
from app.estimator.catalog_types import PriceRow, PricingKind

PROVIDER = "gcp"
USAGE_TYPES: dict[str, PricingKind] = {
    "OnDemand": "on_demand",
    "Preemptible": "spot",  # Spot VMs are billed under the Preemptible usage type
    "Commit1Yr": "committed",
}
NANOS = 1e9


def parse(doc: Mapping[str, Any], *, fetched_at: datetime, source: str) -> list[PriceRow]:
    """Per-GPU rows of every mapped GPU SKU in a SKU list; raises `PriceImportError`."""
    skus = need(doc, "skus", list, "page")
    if doc.get("nextPageToken"):
        raise PriceImportError(
            "page: nextPageToken is set: this is one page of a longer answer; fetch every page "
            "(tunecost prices refresh --provider gcp) or merge them"
        )
    known = instances_of(PROVIDER)
    rows: list[PriceRow] = []
    for i, sku in enumerate(skus):
        where = f"skus[{i}]"
        category = need(sku, "category", dict, where)
        if category.get("resourceGroup") != "GPU":
            continue
        pricing = USAGE_TYPES.get(str(category.get("usageType")))
        item = _gpu_of(need(sku, "description", str, where), known)
        if pricing is None or item is None:
            continue
        price = _hourly(need(sku, "pricingInfo", list, where), f"{where}.pricingInfo")
        regions = need(sku, "serviceRegions", list, where)
        if not regions:
            raise PriceImportError(f"{where}: no serviceRegions")
        for region in regions:
            rows.append(
                per_gpu_row(
                    item=item,
                    instance_usd_per_hour=price,
                    gpus=1,
                    pricing=pricing,
                    region=str(region),
                    fetched_at=fetched_at,
                    where=where,
                    source=f"{source} (Cloud Billing Catalog SKU {sku.get('skuId', '?')}; "
                    "GPU only, host VM billed apart)",
                )
            )
    return check_rows(rows, PROVIDER)


def _gpu_of(description: str, known: Mapping[str, InstanceGpus]) -> InstanceGpus | None:
    """The mapped GPU whose SKU name the description contains (the longest name wins)."""
    text = description.lower()
    hits = [name for name in known if name.lower() in text]
    return known[max(hits, key=len)] if hits else None


def _hourly(infos: list[Any], where: str) -> float:
    """The first tier's unit price of the newest pricing info, per hour."""
    if not infos:
        raise PriceImportError(f"{where}: empty")
    expr = need(infos[-1], "pricingExpression", dict, f"{where}[-1]")
    unit = need(expr, "usageUnit", str, f"{where}[-1].pricingExpression")
    if unit != "h":
        raise PriceImportError(f"{where}[-1].pricingExpression.usageUnit {unit!r}, expected 'h'")
    tiers = need(expr, "tieredRates", list, f"{where}[-1].pricingExpression")
    if not tiers:
        raise PriceImportError(f"{where}[-1].pricingExpression.tieredRates: empty")
    price = need(tiers[0], "unitPrice", dict, f"{where}[-1].tieredRates[0]")
    if price.get("currencyCode", "USD") != "USD":
        raise PriceImportError(f"{where}: currency {price['currencyCode']}, expected USD")
    units = usd(price.get("units", "0"), f"{where}[-1].tieredRates[0].unitPrice.units")
    nanos = usd(price.get("nanos", 0), f"{where}[-1].tieredRates[0].unitPrice.nanos")
    return units + nanos / NANOS
