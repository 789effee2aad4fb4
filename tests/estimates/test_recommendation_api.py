"""The recommendation rules of issue 4, asked over HTTP.

Asked by a team of this module's own: no other test's finished jobs calibrate its estimates, so
the rules are checked on the estimator's priors whatever ran before.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth, key_per_scope
from tests.support import ServiceEnv

BASE = {
    "model": "meta-llama/Llama-3.2-1B",
    "dataset": {"num_examples": 20000, "avg_tokens": 300, "max_tokens": 1024},
    "hardware": {"gpu": "A100-80GB"},
}


@pytest.fixture(scope="module")
def keys(service_env: ServiceEnv) -> dict[str, str]:
    return key_per_scope("recommend", team=f"rec-{uuid.uuid4().hex[:8]}")


def _rec(client: TestClient, secret: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/estimates", json=body, headers=auth(secret))
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def test_without_a_reason_for_full_a_peft_method_is_recommended(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    est = _rec(app_client, keys["read"], BASE)
    rec = est["recommendation"]
    assert rec["method"] in ("lora", "qlora")
    assert any("not needed" in r for r in rec["reasons"])
    assert any("Hu et al." in r for r in rec["reasons"])  # the parity claim cites its source
    full, chosen = est["results"]["full"], est["results"][rec["method"]]
    ratio = full["cost_usd"] / chosen["cost_usd"]
    shown = {k: full.get(k) for k in ("fits", "runnable", "basis", "gpu", "num_gpus")}
    assert any(f"{ratio:.1f}x" in r for r in rec["reasons"]), (rec["reasons"], shown)


def test_high_domain_shift_or_lora_insufficient_justify_full(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    for extra in ({"domain_shift": "high"}, {"lora_tried_and_insufficient": True}):
        rec = _rec(app_client, keys["read"], BASE | extra)["recommendation"]
        assert rec["method"] == "full", rec
        assert any("Biderman" in r for r in rec["reasons"])


def test_a_budget_below_full_cost_keeps_peft_and_says_why(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    est = _rec(app_client, keys["read"], BASE)
    full, lora = est["results"]["full"]["cost_usd"], est["results"]["lora"]["cost_usd"]
    assert lora < full
    budget = (lora + full) / 2
    rec = _rec(app_client, keys["read"], BASE | {"domain_shift": "high", "budget_usd": budget})
    assert rec["recommendation"]["method"] in ("lora", "qlora")
    assert any("budget" in r for r in rec["recommendation"]["reasons"])


def test_full_that_does_not_fit_the_hardware_is_not_recommended(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    body = BASE | {
        "model": "meta-llama/Llama-2-13b-hf",
        "hardware": {"gpu": "A100-40GB", "num_gpus": 1},
        "domain_shift": "high",
    }
    est = _rec(app_client, keys["read"], body)
    assert est["results"]["full"]["fits"] is False
    assert est["recommendation"]["method"] in ("lora", "qlora")
    assert any("does not fit" in r for r in est["recommendation"]["reasons"])


def test_many_variants_bring_the_storage_argument(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    rec = _rec(app_client, keys["read"], BASE | {"variants": 12})["recommendation"]
    assert any("12 task variants" in r and "adapters" in r for r in rec["reasons"])
