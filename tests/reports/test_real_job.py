"""One real job (tiny model, LoRA on the CPU worker) through reports, FOCUS and calibration."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.calibration.samples import load_samples
from app.db import session_scope
from tests.conftest import auth
from tests.jobs.conftest import dataset_id, job_body, tiny_model  # noqa: F401 (fixtures)
from tests.jobs.jobs_support import submit, wait_status
from tests.reports.factory import unique

pytestmark = pytest.mark.slow


def test_a_finished_job_appears_in_every_view(
    app_client: TestClient,
    keys: dict[str, str],
    cpu_worker: object,
    job_body: Callable[..., dict[str, Any]],  # noqa: F811 (the fixture imported above)
) -> None:
    suite = unique("real")
    job = submit(app_client, keys, job_body("lora", tags={"suite": suite}))
    job = wait_status(app_client, keys, job["id"])
    assert job["status"] == "succeeded", (job["error"], job["status_detail"])
    read = auth(keys["read"])

    report = app_client.get(
        "/v1/reports/estimate-vs-actual",
        params={"tag.suite": suite, "group_by": "job"},
        headers=read,
    ).json()
    (row,) = report["rows"]
    assert row["group"] == job["id"] and row["jobs"] == 1
    assert row["gpu_hours"]["estimated"] == pytest.approx(job["est_gpu_hours"])
    assert row["gpu_hours"]["actual"] == pytest.approx(job["act_gpu_hours"])
    assert row["peak_bytes"]["actual"] == pytest.approx(job["act_peak_bytes"])
    want = (job["est_gpu_hours"] - job["act_gpu_hours"]) / job["act_gpu_hours"] * 100
    assert row["gpu_hours"]["mean_pct_error"] == pytest.approx(want)

    r = app_client.get("/v1/reports/focus", params={"tag.suite": suite}, headers=read)
    (charge,) = list(csv.DictReader(io.StringIO(r.text)))
    # Run on this CPU worker (no cost-source setting): self-hosted, priced at the aws list price.
    assert charge["ResourceId"] == job["id"] and charge["ProviderName"] == "Self-hosted"
    assert float(charge["BilledCost"]) == 0 and charge["x_CostSource"] == "self_hosted"
    assert float(charge["ListCost"]) == pytest.approx(job["act_cost_usd"])
    assert float(charge["ConsumedQuantity"]) == pytest.approx(job["act_gpu_hours"])
    assert json.loads(charge["Tags"])["suite"] == suite

    # What calibration reads from it: a measured efficiency and a (CPU RSS) memory ratio.
    with session_scope() as session:
        samples = {s.job_id: s for s in load_samples(session, per_group=None)}
    sample: Any = samples[job["id"]]
    assert sample.gpu == "cpu" and sample.method == "lora"
    assert sample.efficiency is not None and sample.efficiency > 0
    assert sample.efficiency_source in ("train_time", "measured_mfu")
    assert sample.memory_ratio is not None and sample.peak_kind == "cpu_rss"
