"""Organisation rate cards: parsing, matching, estimates priced side by side, FOCUS columns."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.catalog.prices.ratecard import RateCardError, RateLineIn, contract_for, parse_csv
from app.db import session_scope
from tests.conftest import auth
from tests.reports.factory import make_job, unique

CARD = (
    "provider,gpu,discount_pct,valid_from,valid_to,commitment_id\n"
    "gcp,A100-80GB,30,2026-01-01,,contract-2026\n"
)
ESTIMATE: dict[str, Any] = {
    "model": "openai-community/gpt2",
    "dataset": {"num_examples": 1000, "avg_tokens": 200, "max_tokens": 512},
    "methods": ["lora"],
    "training": {"micro_batch_size": 4, "seq_len": 512},
    "hardware": {"gpu": "A100-80GB", "num_gpus": 1},
    "available_gpus": {"A100-80GB": 8, "H100-80GB-SXM": 8},  # plans on these only
}


def _line(**over: Any) -> RateLineIn:
    base: dict[str, Any] = {"provider": "gcp", "gpu": "A100-80GB", "valid_from": "2026-01-01"}
    return RateLineIn.model_validate(base | over)


def test_the_most_specific_valid_line_wins() -> None:
    lines = [
        _line(discount_pct=10),
        _line(discount_pct=20, region="us-east1"),
        _line(contracted_usd_per_gpu_hour=1.0, instance="a2-ultragpu-1g", region="us-east1"),
        _line(discount_pct=50, valid_from="2027-01-01"),
    ]
    on = date(2026, 6, 1)

    def rate(**offer: Any) -> float | None:
        args: dict[str, Any] = {"provider": "gcp", "gpu": "A100-80GB", "instance": None}
        args |= {"region": "us-central1", "pricing": "on_demand", "list_price": 4.0} | offer
        got = contract_for(lines, on=on, **args)
        return got.usd_per_gpu_hour if got else None

    assert rate() == pytest.approx(3.6)  # any region: 10 %
    assert rate(region="us-east1") == pytest.approx(3.2)  # the region's line: 20 %
    assert rate(region="us-east1", instance="a2-ultragpu-1g") == 1.0  # contracted price
    assert rate(provider="aws") is None and rate(gpu="H100-80GB-SXM") is None
    assert (
        contract_for(
            lines[3:],
            on=on,
            provider="gcp",
            gpu="A100-80GB",
            instance=None,
            region=None,
            pricing="on_demand",
            list_price=4.0,
        )
        is None
    )  # not yet


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("provider,gpu,valid_from\ngcp,A100-80GB,2026-01-01\n", "lines[0]", "exactly one of"),
        (
            "provider,gpu,discount_pct,valid_from\ngcp,A100-80GB,130,2026-01-01\n",
            "lines[0].discount_pct",
            "less than 100",
        ),
        ("provider,discount_pct,valid_from\ngcp,30,2026-01-01\n", "lines[0]", "name the gpu"),
        (
            "provider,gpu,discount_pct,valid_from,valid_to\n"
            "gcp,A100-80GB,30,2026-02-01,2026-01-01\n",
            "lines[0]",
            "before valid_from",
        ),
        ("provider,gpu,discount,valid_from\ngcp,A100-80GB,30,2026-01-01\n", "header", "discount"),
    ],
)
def test_a_bad_card_says_which_line_and_field(text: str, field: str, words: str) -> None:
    with pytest.raises(RateCardError) as info:
        parse_csv(text)
    assert info.value.field == field and words in str(info.value)


def test_an_estimate_shows_list_and_contracted_cost_for_the_carded_plans_only(
    app_client: TestClient, iso_keys: dict[str, str]
) -> None:
    admin, read = auth(iso_keys["admin"]), auth(iso_keys["read"])
    put = app_client.put(
        "/v1/catalog/rate-card", content=CARD, headers=admin | {"content-type": "text/csv"}
    )
    assert put.status_code == 200, put.text
    assert put.json()["lines"][0]["discount_pct"] == 30
    try:
        out = app_client.post("/v1/estimates", json=ESTIMATE, headers=read).json()
        plans = out["plans"]["lora"]
        carded = [p for p in plans if (p["provider"], p["gpu"]) == ("gcp", "A100-80GB")]
        others = [p for p in plans if p["provider"] not in ("gcp", None)]
        assert carded and others
        for p in carded:
            assert p["contracted_price_per_gpu_hour"] == pytest.approx(
                0.7 * p["price_per_gpu_hour"]
            )
            assert p["contracted_cost_usd"] == pytest.approx(0.7 * p["cost_usd"])
            assert p["commitment_id"] == "contract-2026"
        for p in others:
            assert p["contracted_cost_usd"] is None and p["commitment_id"] is None
        assert any(n.startswith("rate card:") for n in out["notes"])
        at_gcp = ESTIMATE | {"hardware": ESTIMATE["hardware"] | {"provider": "gcp"}}
        result = app_client.post("/v1/estimates", json=at_gcp, headers=read).json()
        lora = result["results"]["lora"]
        assert lora["contracted_cost_usd"] == pytest.approx(0.7 * lora["cost_usd"])
        # a bad upload is refused whole and the stored card stays
        bad = app_client.put(
            "/v1/catalog/rate-card",
            json={
                "lines": [
                    {
                        "provider": "gcp",
                        "gpu": "A100",
                        "discount_pct": 130,
                        "valid_from": "2026-01-01",
                    }
                ]
            },
            headers=admin,
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["loc"] == ["lines[0]", "discount_pct"]
        assert (
            app_client.get("/v1/catalog/rate-card", headers=read).json()["lines"]
            == (put.json()["lines"])
        )
        wrong = app_client.put("/v1/catalog/rate-card", content=CARD, headers=admin)
        assert wrong.status_code == 422
        assert (
            app_client.put("/v1/catalog/rate-card", content=CARD, headers=read).status_code == 403
        )
    finally:
        assert app_client.delete("/v1/catalog/rate-card", headers=admin).status_code == 200
    plain = app_client.post("/v1/estimates", json=ESTIMATE, headers=read).json()
    assert all(p["contracted_cost_usd"] is None for p in plain["plans"]["lora"])


def test_focus_exports_contracted_and_effective_cost_from_the_job_estimate(
    app_client: TestClient, iso_keys: dict[str, str]
) -> None:
    suite = unique("card")
    price, act_hours = 5.0, 2.0
    with session_scope() as session:
        snap_card = {
            "method": "lora",
            "gpu": "A100-80GB",
            "num_gpus": 1,
            "hours": 2.0,
            "gpu_hours": 2.0,
            "cost_usd": 10.0,
            "price_per_gpu_hour": price,
            "contracted_price_per_gpu_hour": 0.7 * price,
            "commitment_id": "contract-2026",
            "memory": {"per_gpu_bytes": 1},
            "time": {"overhead_s": 0.0, "total_s": 7200.0},
        }
        carded = make_job(
            session,
            provider="gcp",
            price=price,
            act_hours=act_hours,
            snap=snap_card,
            tags={"suite": suite},
        )
        plain = make_job(
            session, provider="gcp", price=price, act_hours=act_hours, tags={"suite": suite}
        )
        ids = (carded.id, plain.id)
    r = app_client.get(
        "/v1/reports/focus",
        params={"tag.suite": suite, "format": "json"},
        headers=auth(iso_keys["read"]),
    )
    assert r.status_code == 200, r.text
    rows = {row["ResourceId"]: row for row in r.json()["rows"]}
    card, base = rows[ids[0]], rows[ids[1]]
    for row in (card, base):
        assert row["ListCost"] == pytest.approx(price * act_hours)
        assert row["ListUnitPrice"] == price
    assert card["ContractedCost"] == pytest.approx(0.7 * card["ListCost"])
    assert card["ContractedUnitPrice"] == pytest.approx(0.7 * price)
    # cloud-billed: the invoice and the effective cost are at the contracted rate
    assert card["BilledCost"] == card["EffectiveCost"] == pytest.approx(card["ContractedCost"])
    assert card["CommitmentDiscountId"] == "contract-2026"
    assert card["CommitmentDiscountCategory"] == "Spend"
    assert card["CommitmentDiscountStatus"] == "Used"
    assert card["CommitmentDiscountQuantity"] == pytest.approx(card["ContractedCost"])
    assert base["ContractedCost"] == base["BilledCost"] == pytest.approx(base["ListCost"])
    assert base["CommitmentDiscountId"] is None and base["CommitmentDiscountCategory"] is None
