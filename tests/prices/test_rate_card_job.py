"""A real job (tiny model, CPU worker) submitted from an estimate priced under a rate card."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.jobs.conftest import dataset_id, job_body, tiny_model  # noqa: F401 (fixtures)
from tests.jobs.jobs_support import submit, wait_status
from tests.reports.factory import unique

pytestmark = pytest.mark.slow
CARD = "provider,gpu,discount_pct,valid_from,commitment_id\naws,cpu,30,2026-01-01,cpu-contract\n"


def test_a_job_under_a_rate_card_exports_contracted_cost(
    app_client: TestClient,
    keys: dict[str, str],
    cpu_worker: object,
    job_body: Callable[..., dict[str, Any]],  # noqa: F811
) -> None:
    admin = auth(keys["admin"])
    put = app_client.put(
        "/v1/catalog/rate-card", content=CARD, headers=admin | {"content-type": "text/csv"}
    )
    assert put.status_code == 200, put.text
    try:
        suite = unique("card-job")
        job = submit(app_client, keys, job_body("lora", tags={"suite": suite}))
        job = wait_status(app_client, keys, job["id"])
        assert job["status"] == "succeeded", (job["error"], job["status_detail"])
    finally:
        app_client.delete("/v1/catalog/rate-card", headers=admin)
    # the job's estimate snapshot carries the price row's date and source and the contract
    frozen = job["estimate"]
    assert frozen["price_as_of"] and "aws" in frozen["price_source"]
    assert frozen["contracted_price_per_gpu_hour"] == pytest.approx(
        0.7 * frozen["price_per_gpu_hour"]
    )
    r = app_client.get(
        "/v1/reports/focus",
        params={"tag.suite": suite, "format": "json"},
        headers=auth(keys["read"]),
    )
    (row,) = r.json()["rows"]
    assert row["ListCost"] == pytest.approx(job["act_cost_usd"])
    assert row["ContractedCost"] == pytest.approx(0.7 * row["ListCost"])
    assert row["ContractedUnitPrice"] == pytest.approx(0.7 * row["ListUnitPrice"])
    assert row["CommitmentDiscountId"] == "cpu-contract"
    # this CPU worker is self-hosted: nothing is invoiced, the effective cost is its own rate
    assert row["BilledCost"] == 0
    effective = row["ConsumedQuantity"] * row["x_InternalUnitPrice"]
    assert row["EffectiveCost"] == pytest.approx(effective) and effective > 0
