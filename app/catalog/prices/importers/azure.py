"""Azure Retail Prices API (JSON pages): virtual machine consumption, spot and 1-year reservations.

Format: Microsoft Learn, "Azure Retail Prices overview"
(https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices): a page
is `{"BillingCurrency", "Items": [...], "NextPageLink", "Count"}`; each item has `armSkuName`,
`armRegionName`, `skuName`, `productName`, `serviceName`, `type` (Consumption, Reservation,
DevTestConsumption), `reservationTerm`, `unitOfMeasure` and `retailPrice` in `currencyCode`.
A page whose `NextPageLink` is set is part of a longer answer: refused as partial (the fetcher
follows the links and hands over one combined page).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.catalog.prices.importers.common import (
    PriceImportError,
    check_rows,
    instances_of,
    need,
    per_gpu_row,
    usd,
)
from app.estimator.catalog_types import PriceRow, PricingKind

PROVIDER = "azure"
ARM_PREFIX = "Standard_"  # armSkuName is "Standard_ND96asr_v4"; the catalog says "ND96asr_v4"
HOURLY = "1 Hour"
# A 1-year reservation's retailPrice is the whole term's price (the API lists it per term, not
# per hour); hours in one year of 365 days.
HOURS_PER_YEAR = 365 * 24


def parse(doc: Mapping[str, Any], *, fetched_at: datetime, source: str) -> list[PriceRow]:
    """Per-GPU rows of every mapped VM size in a Retail Prices answer; raises `PriceImportError`."""
    items = need(doc, "Items", list, "page")
    if doc.get("NextPageLink"):
        raise PriceImportError(
            f"page: NextPageLink is set ({doc['NextPageLink']}): this is one page of a longer "
            "answer; fetch every page (tunecost prices refresh --provider azure) or merge them"
        )
    known = instances_of(PROVIDER)
    rows: list[PriceRow] = []
    for i, item in enumerate(items):
        where = f"Items[{i}]"
        arm = need(item, "armSkuName", str, where).removeprefix(ARM_PREFIX)
        if arm not in known or item.get("serviceName") != "Virtual Machines":
            continue
        if "Windows" in str(item.get("productName", "")):
            continue  # the same VM with a Windows licence added
        pricing = _pricing(item, where)
        if pricing is None:
            continue
        if need(item, "currencyCode", str, where) != "USD":
            raise PriceImportError(f"{where}: currency {item['currencyCode']}, expected USD")
        price = usd(need(item, "retailPrice", (int, float), where), where)
        unit = need(item, "unitOfMeasure", str, where)
        if pricing == "committed":
            price = price / HOURS_PER_YEAR
        elif unit != HOURLY:
            raise PriceImportError(f"{where}: unitOfMeasure {unit!r}, expected {HOURLY!r}")
        mapped = known[arm]
        rows.append(
            per_gpu_row(
                item=mapped,
                instance_usd_per_hour=price,
                gpus=mapped.gpus_per_instance,
                pricing=pricing,
                region=need(item, "armRegionName", str, where),
                fetched_at=fetched_at,
                where=where,
                source=f"{source} (Azure Retail Prices, meter {item.get('meterId', '?')})",
            )
        )
    return check_rows(rows, PROVIDER)


def _pricing(item: Mapping[str, Any], where: str) -> PricingKind | None:
    """on_demand, spot or committed (1-year reservation); None for what we do not price."""
    kind = need(item, "type", str, where)
    sku_name = str(item.get("skuName", ""))
    if kind == "Consumption":
        if sku_name.endswith("Low Priority"):
            return None  # the retired Batch low-priority tier
        return "spot" if sku_name.endswith("Spot") else "on_demand"
    if kind == "Reservation":
        return "committed" if item.get("reservationTerm") == "1 Year" else None
    return None  # DevTestConsumption and anything new
