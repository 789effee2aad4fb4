"""Finding 9: a price import is bounded like a price override, and every 422 names its field,
NUL characters included — on a real server (refusals only: the session's catalog is shared)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.catalog.prices.importers import PriceImportError, parse
from app.catalog.schemas import MAX_USD_PER_GPU_HOUR
from tests.live_api import LiveApi

SAMPLES = Path(__file__).resolve().parent.parent / "prices" / "samples"
IMPORTS = "/v1/catalog/price-imports"
ESTIMATE = {
    "model": "openai-community/gpt2",
    "dataset": {"num_examples": 1000, "avg_tokens": 200, "max_tokens": 512},
    "methods": ["lora"],
    "hardware": {"gpu": "A100-80GB", "provider": "runpod"},
}


def _runpod(**entry: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SAMPLES / "runpod_gpu_prices.json").read_text())
    doc["prices"][0].update(entry)
    return doc


def _locs(r: Any) -> list[list[str]]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    errors = r.json()["errors"]
    assert errors, r.json()  # a 422 always names its field
    return [e["loc"] for e in errors]


def test_a_price_past_the_overrides_bound_is_refused_naming_it(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    with live_api.client(keys["read"]) as client:
        before = client.post("/v1/estimates", json=ESTIMATE)
    assert before.status_code == 201, before.text
    with live_api.client(keys["admin"]) as client:
        for price in (1e308, MAX_USD_PER_GPU_HOUR * 1.01):
            r = client.post(IMPORTS, params={"source": "s"}, json=_runpod(usd_per_gpu_hour=price))
            assert _locs(r) == [["body", "prices[0]", "usd_per_gpu_hour"]]
            assert f"{MAX_USD_PER_GPU_HOUR:g}" in r.json()["detail"]
        put = client.put("/v1/catalog/prices/runpod/A100-80GB", json={"usd_per_gpu_hour": 1e308})
        assert _locs(put) == [["body", "usd_per_gpu_hour"]]  # the bound both share
    with live_api.client(keys["read"]) as client:
        after = client.post("/v1/estimates", json=ESTIMATE)
    assert after.status_code == 201, after.text  # nothing changed: priced as before
    price = after.json()["results"]["lora"]["price_per_gpu_hour"]
    assert price == before.json()["results"]["lora"]["price_per_gpu_hour"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "loc"),
    [
        ("post", IMPORTS, {"params": {"source": "a\x00b"}, "json": _runpod()}, ["query", "source"]),
        (
            "post",
            IMPORTS,
            {"params": {"source": "s"}, "json": _runpod(region="eu\x00")},
            ["body", "prices", "0", "region"],
        ),
        (
            "put",
            "/v1/catalog/rate-card",
            {
                "json": {
                    "lines": [
                        {
                            "provider": "aws",
                            "gpu": "A100-80GB",
                            "discount_pct": 10,
                            "valid_from": "2026-01-01",
                            "commitment_id": "c\x00",
                        }
                    ]
                }
            },
            ["body", "lines", "0", "commitment_id"],
        ),
        ("post", "/v1/keys", {"json": {"name": "k\x00", "scope": "read"}}, ["body", "name"]),
        ("get", "/v1/jobs", {"params": {"tag.team": "x\x00"}}, ["query", "tag.team"]),
    ],
)
def test_a_nul_character_is_a_422_naming_its_field(
    live_api: LiveApi,
    keys: dict[str, str],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    loc: list[str],
) -> None:
    with live_api.client(keys["admin"]) as client:
        r = client.request(method.upper(), path, **copy.deepcopy(kwargs))
    assert _locs(r) == [loc]


FETCHED = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"usd_per_gpu_hour": 1e308}, "prices[0].usd_per_gpu_hour"),
        ({"region": "eu\x00west"}, "prices[0].region"),
        ({"instance": "x" * 201}, "prices[0].instance"),
        ({"pricing": "free"}, "prices[0].pricing"),
    ],
)
def test_importers_name_the_field_off_the_http_path_too(entry: dict[str, Any], field: str) -> None:
    # `tunecost prices refresh` and the scheduled refresh parse without the HTTP checks.
    with pytest.raises(PriceImportError) as err:
        parse(_runpod(**entry), provider=None, fetched_at=FETCHED, source="file")
    assert err.value.field == field


def test_a_provider_documents_region_is_checked_where_it_is_read() -> None:
    doc = json.loads((SAMPLES / "azure_retail_prices.json").read_text())
    doc["Items"][0]["armRegionName"] = "west\x00europe"
    with pytest.raises(PriceImportError) as err:
        parse(doc, provider="azure", fetched_at=FETCHED, source="file")
    assert err.value.field == "Items[0]" and "region" in str(err.value)
