"""AWS Price List offer file for Amazon EC2 (JSON): on-demand and 1-year reserved instance prices.

Format: AWS Billing User Guide, "Reading the service price list file for an AWS service"
(https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/reading-service-price-list-file-for-services.html):
`products` by SKU with `attributes` (instanceType, regionCode, gpu, operatingSystem, tenancy,
preInstalledSw, capacitystatus), and `terms.OnDemand` / `terms.Reserved` by SKU then offer term,
each with `priceDimensions` whose `pricePerUnit.USD` is per `unit` "Hrs". Spot prices are not in
the Price List (they come from EC2's DescribeSpotPriceHistory), so this importer yields none.
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

PROVIDER = "aws"
OFFER_CODE = "AmazonEC2"
# The plain rentable box: Linux, shared tenancy, no pre-installed licensed software, a used
# (not reserved-capacity) instance; every other combination is a surcharge of the same instance.
PLAIN = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
}
# The commitment priced as `committed`: 1 year, no upfront, standard class (billed per hour).
RESERVED = {
    "LeaseContractLength": "1yr",
    "PurchaseOption": "No Upfront",
    "OfferingClass": "standard",
}


def parse(doc: Mapping[str, Any], *, fetched_at: datetime, source: str) -> list[PriceRow]:
    """Per-GPU rows of every mapped EC2 instance in an offer file; raises `PriceImportError`."""
    if need(doc, "offerCode", str, "offer file") != OFFER_CODE:
        raise PriceImportError(f"offer file: offerCode is {doc['offerCode']!r}, not {OFFER_CODE}")
    products = need(doc, "products", dict, "offer file")
    terms = need(doc, "terms", dict, "offer file")
    on_demand = need(terms, "OnDemand", dict, "terms")
    reserved = terms.get("Reserved", {})
    known = instances_of(PROVIDER)
    rows: list[PriceRow] = []
    for sku, product in products.items():
        where = f"products.{sku}"
        attrs = need(product, "attributes", dict, where)
        instance = attrs.get("instanceType")
        if instance not in known or any(attrs.get(k) != v for k, v in PLAIN.items()):
            continue
        item = known[instance]
        region = need(attrs, "regionCode", str, f"{where}.attributes")
        gpus = _gpu_count(attrs.get("gpu"), item.gpus_per_instance, where)
        if sku not in on_demand:
            raise PriceImportError(f"{where} ({instance}, {region}) has no OnDemand term: partial")
        priced: list[tuple[PricingKind, Mapping[str, Any]]] = [("on_demand", on_demand[sku])]
        if sku in reserved:
            priced.append(("committed", reserved[sku]))
        for pricing, offers in priced:
            hourly = _hourly(offers, pricing, f"terms.{pricing}.{sku}")
            if hourly is None:
                continue
            rows.append(
                per_gpu_row(
                    item=item,
                    instance_usd_per_hour=hourly,
                    gpus=gpus,
                    pricing=pricing,
                    region=region,
                    fetched_at=fetched_at,
                    where=where,
                    source=f"{source} (AWS Price List {OFFER_CODE} "
                    f"{doc.get('version', '?')}, SKU {sku})",
                )
            )
    for sku in on_demand:
        if sku not in products:
            raise PriceImportError(f"terms.OnDemand.{sku}: no such product in the file: partial")
    return check_rows(rows, PROVIDER)


def _gpu_count(text: Any, mapped: int, where: str) -> int:
    """The GPUs the offer file says the instance has; it must agree with instances.csv."""
    if text is None:
        return mapped
    try:
        count = int(str(text))
    except ValueError:
        raise PriceImportError(f"{where}.attributes.gpu: {text!r} is not a count") from None
    if count != mapped:
        raise PriceImportError(
            f"{where}: the offer file says {count} GPUs, app/catalog/instances.csv {mapped}"
        )
    return count


def _hourly(offers: Any, pricing: PricingKind, where: str) -> float | None:
    """The USD per hour of the offer term we price (None: no reserved term of our kind)."""
    if not isinstance(offers, Mapping) or not offers:
        raise PriceImportError(f"{where}: expected offer terms")
    for code, term in offers.items():
        if pricing == "committed":
            attrs = need(term, "termAttributes", dict, f"{where}.{code}")
            if any(attrs.get(k) != v for k, v in RESERVED.items()):
                continue
        dims = need(term, "priceDimensions", dict, f"{where}.{code}")
        for rate, dim in dims.items():
            if need(dim, "unit", str, f"{where}.{code}.priceDimensions.{rate}") != "Hrs":
                continue
            price = need(dim, "pricePerUnit", dict, f"{where}.{code}.priceDimensions.{rate}")
            return usd(price.get("USD"), f"{where}.{code}.priceDimensions.{rate}")
        raise PriceImportError(f"{where}.{code}: no hourly price dimension")
    return None
