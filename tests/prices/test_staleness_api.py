"""Price staleness: as-of date and source on every priced figure, notes, health and the catalog."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.catalog import load_catalog
from app.config import get_settings
from app.estimator.catalog_types import PriceRow
from app.models.base import utcnow
from tests.conftest import auth

BODY: dict[str, Any] = {
    "model": "openai-community/gpt2",
    "dataset": {"num_examples": 2000, "avg_tokens": 200, "max_tokens": 512},
    "methods": ["lora", "full"],
    "training": {"micro_batch_size": 4, "seq_len": 512},
    "hardware": {"gpu": "A10G", "provider": "aws", "pricing": "on_demand"},
}


def _seed(provider: str, gpu: str, pricing: str = "on_demand") -> PriceRow:
    return next(
        r
        for r in load_catalog().prices
        if (r.provider, r.gpu, r.pricing) == (provider, gpu, pricing)
    )


@pytest.fixture
def max_age(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Set TUNECOST_PRICE_MAX_AGE_DAYS for one test (settings are re-read)."""

    def set_days(days: int) -> None:
        monkeypatch.setenv("TUNECOST_PRICE_MAX_AGE_DAYS", str(days))
        get_settings.cache_clear()

    yield set_days
    monkeypatch.delenv("TUNECOST_PRICE_MAX_AGE_DAYS", raising=False)
    get_settings.cache_clear()


def test_catalog_lists_each_price_with_its_date_source_and_seed_origin(
    app_client: TestClient, iso_keys: dict[str, str], max_age: Callable[[int], None]
) -> None:
    body = app_client.get("/v1/catalog/prices", headers=auth(iso_keys["read"])).json()
    assert body["price_max_age_days"] == 90
    seed = {(r.provider, r.gpu, r.pricing): r for r in load_catalog().prices}
    assert len(body["prices"]) == len(seed)
    today = utcnow().date()
    for p in body["prices"]:
        row = seed[(p["provider"], p["gpu"], p["pricing"])]
        assert p["origin"] == "seed" and p["override"] is False
        assert date.fromisoformat(p["as_of"]) == row.as_of
        assert p["source"] == row.source
        assert p["age_days"] == (today - row.as_of).days
        assert p["stale"] is ((today - row.as_of).days > 90)
    max_age(3650)
    relaxed = app_client.get("/v1/catalog/prices", headers=auth(iso_keys["read"])).json()
    assert relaxed["price_max_age_days"] == 3650
    assert not any(p["stale"] for p in relaxed["prices"])


def test_stale_price_warns_in_the_estimate_and_degrades_health(
    app_client: TestClient, iso_keys: dict[str, str], max_age: Callable[[int], None]
) -> None:
    aws_a10g = _seed("aws", "A10G")
    age = (utcnow().date() - aws_a10g.as_of).days
    max_age(max(age - 1, 1))  # the seed row is one day too old
    r = app_client.post("/v1/estimates", json=BODY, headers=auth(iso_keys["read"]))
    assert r.status_code == 201, r.text
    out = r.json()
    for method in ("lora", "full"):
        result = out["results"][method]
        assert result["price_as_of"] == aws_a10g.as_of.isoformat()
        assert result["price_source"] == aws_a10g.source
        assert result["region"] == aws_a10g.region
        plan = out["plans"][method][0]
        assert plan["price_as_of"] and plan["price_source"]
    warning = [n for n in out["notes"] if n.startswith("stale price: aws A10G on_demand")]
    assert len(warning) == 1 and aws_a10g.as_of.isoformat() in warning[0]
    stored = app_client.get(f"/v1/estimates/{out['id']}", headers=auth(iso_keys["read"])).json()
    assert stored["notes"] == out["notes"]
    health = app_client.get("/v1/health", headers=auth(iso_keys["read"]))
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["prices"]["ok"] is False and health.json()["prices"]["stale"] > 0

    max_age(age + 1)  # now young enough: no warning, health ok on prices
    fresh = app_client.post("/v1/estimates", json=BODY, headers=auth(iso_keys["read"])).json()
    assert not any(n.startswith("stale price") for n in fresh["notes"])
    healthy = app_client.get("/v1/health", headers=auth(iso_keys["read"])).json()
    assert healthy["prices"]["ok"] is True


def test_an_override_set_today_is_fresh(
    app_client: TestClient, iso_keys: dict[str, str], max_age: Callable[[int], None]
) -> None:
    max_age(30)
    admin = auth(iso_keys["admin"])
    put = app_client.put(
        "/v1/catalog/prices/aws/A10G", json={"usd_per_gpu_hour": 0.9}, headers=admin
    )
    assert put.status_code == 200, put.text
    assert put.json()["price"]["origin"] == "override" and put.json()["price"]["stale"] is False
    try:
        only_lora = BODY | {"methods": ["lora"], "hardware": BODY["hardware"] | {"num_gpus": 1}}
        out = app_client.post("/v1/estimates", json=only_lora, headers=auth(iso_keys["read"]))
        result = out.json()["results"]["lora"]
        assert result["price_as_of"] == utcnow().date().isoformat()
        assert result["price_per_gpu_hour"] == 0.9
        assert not any(n.startswith("stale price: aws A10G") for n in out.json()["notes"])
    finally:
        app_client.delete("/v1/catalog/prices/aws/A10G", headers=admin)
