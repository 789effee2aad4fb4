"""Each provider importer on its sample document: per-GPU prices, regions and pricing kinds.

Expected prices are read from the sample itself (instance price / GPUs), never written here.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.catalog.prices import importers
from app.catalog.prices.importers import PriceImportError
from app.estimator.catalog_types import PriceRow

SAMPLES = Path(__file__).resolve().parent / "samples"
FETCHED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
FILES = {
    "aws": "aws_ec2_offer.json",
    "azure": "azure_retail_prices.json",
    "gcp": "gcp_billing_skus.json",
    "lambda": "lambda_instance_types.json",
    "runpod": "runpod_gpu_prices.json",  # tunecost's own per-GPU list format
}


def sample(provider: str) -> dict[str, Any]:
    """A fresh copy of a provider's sample document."""
    result: dict[str, Any] = json.loads((SAMPLES / FILES[provider]).read_text())
    return result


def _parse(doc: Any, provider: str | None = None) -> list[PriceRow]:
    name, rows = importers.parse(doc, provider=provider, fetched_at=FETCHED, source="sample")
    if provider is not None:
        assert name == provider
    return rows


def _by(rows: list[PriceRow]) -> dict[tuple[str, str, str], PriceRow]:
    out: dict[tuple[str, str, str], PriceRow] = {}
    for r in rows:
        key = (r.gpu, r.pricing, r.region)
        assert key not in out, f"two rows for {key}"
        out[key] = r
    return out


@pytest.mark.parametrize("provider", sorted(FILES))
def test_the_shape_of_each_sample_names_its_provider(provider: str) -> None:
    name, rows = importers.parse(sample(provider), provider=None, fetched_at=FETCHED, source="s")
    assert name == provider and rows
    assert all(r.provider == provider and r.origin == "import" for r in rows)
    assert all(r.as_of == FETCHED.date() and r.source.startswith("s (") for r in rows)


def test_aws_offer_file_divides_instance_prices_by_gpus_per_region_and_term() -> None:
    doc = sample("aws")
    rows = _by(_parse(doc, "aws"))

    def od(sku: str) -> float:
        (term,) = doc["terms"]["OnDemand"][sku].values()
        (dim,) = term["priceDimensions"].values()
        return float(dim["pricePerUnit"]["USD"])

    h100 = rows[("H100-80GB-SXM", "on_demand", "us-east-1")]
    assert h100.usd_per_gpu_hour == pytest.approx(od("SAMPLEP5USE1") / 8)
    assert (h100.instance, h100.gpus_per_instance) == ("p5.48xlarge", 8)
    west = rows[("H100-80GB-SXM", "on_demand", "us-west-2")]
    assert west.usd_per_gpu_hour == pytest.approx(od("SAMPLEP5USW2") / 8)
    # Linux only: the Windows p4d SKU is the same instance with a licence on top
    assert rows[("A100-40GB", "on_demand", "us-east-1")].usd_per_gpu_hour == pytest.approx(
        od("SAMPLEP4DUSE1") / 8
    )
    assert rows[("A10G", "on_demand", "us-east-1")].usd_per_gpu_hour == od("SAMPLEG5USE1")
    # committed = the 1-year no-upfront standard reservation, not the 3-year one
    one_year = next(
        t
        for t in doc["terms"]["Reserved"]["SAMPLEP5USE1"].values()
        if t["termAttributes"]["LeaseContractLength"] == "1yr"
    )
    (dim,) = one_year["priceDimensions"].values()
    committed = rows[("H100-80GB-SXM", "committed", "us-east-1")]
    assert committed.usd_per_gpu_hour == pytest.approx(float(dim["pricePerUnit"]["USD"]) / 8)
    assert not any(k[1] == "spot" for k in rows)  # the Price List has no spot prices
    assert len(rows) == 5  # 4 Linux instance-regions on demand + 1 committed; c5 has no GPU


def test_azure_retail_prices_spot_reservation_regions_and_windows() -> None:
    doc = sample("azure")
    rows = _by(_parse(doc, "azure"))

    def item(region: str, sku_name: str, kind: str = "Consumption", product: str = "") -> float:
        price: float = next(
            i["retailPrice"]
            for i in doc["Items"]
            if (i["armRegionName"], i["skuName"], i["type"]) == (region, sku_name, kind)
            and "Windows" not in i["productName"]
            and (not product or i["productName"] == product)
            and i.get("reservationTerm") in (None, "1 Year")
        )
        return price

    a100 = rows[("A100-40GB", "on_demand", "eastus")]
    assert a100.usd_per_gpu_hour == pytest.approx(item("eastus", "ND96asr v4") / 8)
    assert a100.instance == "ND96asr_v4" and a100.gpus_per_instance == 8
    assert rows[("A100-40GB", "on_demand", "westeurope")].usd_per_gpu_hour == pytest.approx(
        item("westeurope", "ND96asr v4") / 8
    )
    assert rows[("A100-40GB", "spot", "eastus")].usd_per_gpu_hour == pytest.approx(
        item("eastus", "ND96asr v4 Spot") / 8
    )
    term = item("eastus", "ND96asr v4", kind="Reservation")
    assert rows[("A100-40GB", "committed", "eastus")].usd_per_gpu_hour == pytest.approx(
        term / (365 * 24) / 8
    )
    assert rows[("T4", "on_demand", "eastus")].usd_per_gpu_hour == item("eastus", "NC4as T4 v3")
    assert len(rows) == 5  # no Low Priority, no Windows, no 3-year term, no D16s_v5


def test_gcp_gpu_skus_per_region_and_usage_type() -> None:
    doc = sample("gcp")
    rows = _by(_parse(doc, "gcp"))

    def price(sku_id: str) -> float:
        sku = next(s for s in doc["skus"] if s["skuId"] == sku_id)
        unit = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"][0]["unitPrice"]
        result: float = int(unit["units"]) + unit["nanos"] / 1e9
        return result

    for region in ("us-central1", "us-east1"):
        assert rows[("A100-80GB", "on_demand", region)].usd_per_gpu_hour == pytest.approx(
            price("SAMPLE-A100-80-OD")
        )
        assert rows[("A100-80GB", "spot", region)].usd_per_gpu_hour == pytest.approx(
            price("SAMPLE-A100-80-SPOT")
        )
    assert rows[("A100-80GB", "committed", "us-central1")].usd_per_gpu_hour == pytest.approx(
        price("SAMPLE-A100-80-CUD")
    )
    assert ("A100-80GB", "committed", "us-east1") not in rows
    # "Nvidia Tesla A100 GPU" is the 40 GB part, not a prefix match of the 80 GB one
    assert rows[("A100-40GB", "on_demand", "us-central1")].usd_per_gpu_hour == pytest.approx(
        price("SAMPLE-A100-40-OD")
    )
    assert rows[("L4", "on_demand", "us-central1")].gpus_per_instance == 1
    assert len(rows) == 7  # the 3-year commitment and the N1 core SKU are not GPU prices we use


def test_lambda_instance_types_per_gpu() -> None:
    doc = sample("lambda")
    rows = _by(_parse(doc, "lambda"))
    h100 = doc["data"]["gpu_8x_h100_sxm5"]["instance_type"]
    got = rows[("H100-80GB-SXM", "on_demand", "us")]
    assert got.usd_per_gpu_hour == pytest.approx(h100["price_cents_per_hour"] / 100 / 8)
    assert got.gpus_per_instance == h100["specs"]["gpus"] == 8
    a100 = doc["data"]["gpu_1x_a100_sxm4"]["instance_type"]["price_cents_per_hour"] / 100
    assert rows[("A100-40GB", "on_demand", "us")].usd_per_gpu_hour == pytest.approx(a100)
    assert len(rows) == 2  # GH200 is not in the GPU catalog


def test_per_gpu_list_as_written_with_aliases_resolved() -> None:
    doc = sample("runpod")
    rows = _by(_parse(doc))
    for entry in doc["prices"]:
        gpu = "H100-80GB-SXM" if entry["gpu"] == "H100" else entry["gpu"]
        row = rows[(gpu, entry["pricing"], entry["region"])]
        assert row.usd_per_gpu_hour == entry["usd_per_gpu_hour"] and row.gpus_per_instance == 1
    with pytest.raises(PriceImportError, match="not aws's"):
        _parse(doc, "aws")


def _break_runpod_gpu(doc: dict[str, Any]) -> str:
    doc["prices"][1]["gpu"] = "H1000"
    return "prices[1].gpu: unknown GPU 'H1000'"


def _break_runpod_pricing(doc: dict[str, Any]) -> str:
    doc["prices"][0]["pricing"] = "reserved"
    return "prices[0].pricing: one of on_demand, spot, committed"


def _break_aws(doc: dict[str, Any]) -> str:
    del doc["terms"]["OnDemand"]["SAMPLEP4DUSE1"]
    return "has no OnDemand term: partial"


def _break_aws_price(doc: dict[str, Any]) -> str:
    (term,) = doc["terms"]["OnDemand"]["SAMPLEP5USE1"].values()
    (dim,) = term["priceDimensions"].values()
    dim["pricePerUnit"]["USD"] = "n/a"
    return "is not a number"


def _break_azure(doc: dict[str, Any]) -> str:
    doc["NextPageLink"] = "https://prices.azure.com/api/retail/prices?$skip=100"
    return "NextPageLink is set"


def _break_azure_field(doc: dict[str, Any]) -> str:
    del doc["Items"][0]["retailPrice"]
    return "Items[0]: missing 'retailPrice'"


def _break_gcp(doc: dict[str, Any]) -> str:
    doc["nextPageToken"] = "CAEQAA"
    return "nextPageToken is set"


def _break_gcp_unit(doc: dict[str, Any]) -> str:
    doc["skus"][0]["pricingInfo"][0]["pricingExpression"]["usageUnit"] = "mo"
    return "usageUnit 'mo'"


def _break_lambda(doc: dict[str, Any]) -> str:
    doc["data"]["gpu_8x_h100_sxm5"]["instance_type"]["specs"]["gpus"] = "eight"
    return "unexpected str 'eight'"


def _break_lambda_empty(doc: dict[str, Any]) -> str:
    doc["data"] = {"gpu_1x_gh200": doc["data"]["gpu_1x_gh200"]}
    return "nothing to import"


BROKEN = [
    ("aws", _break_aws),
    ("aws", _break_aws_price),
    ("azure", _break_azure),
    ("azure", _break_azure_field),
    ("gcp", _break_gcp),
    ("gcp", _break_gcp_unit),
    ("lambda", _break_lambda),
    ("lambda", _break_lambda_empty),
    ("runpod", _break_runpod_gpu),
    ("runpod", _break_runpod_pricing),
]


def broken(provider: str, how: Any) -> tuple[dict[str, Any], str]:
    """A sample made malformed or partial by `how`, and the words the refusal must contain."""
    doc = copy.deepcopy(sample(provider))
    return doc, how(doc)


@pytest.mark.parametrize(("provider", "how"), BROKEN, ids=[f"{p}-{h.__name__}" for p, h in BROKEN])
def test_a_malformed_or_partial_document_is_refused(provider: str, how: Any) -> None:
    doc, reason = broken(provider, how)
    with pytest.raises(PriceImportError) as info:
        _parse(doc, provider)
    assert reason in str(info.value)


def test_an_unknown_shape_names_the_known_providers() -> None:
    with pytest.raises(PriceImportError, match="name the provider"):
        _parse({"prices": []})
    with pytest.raises(PriceImportError, match="no importer for provider 'oracle'"):
        _parse(sample("aws"), "oracle")
