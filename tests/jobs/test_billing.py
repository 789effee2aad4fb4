"""Every attempt is billed: a worker SIGKILLed mid-job, the retry finishes, the cost is the sum.

Also: a cancel that loses the race with the end of a run is recorded as such, and still billed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.db import session_scope
from app.estimator.spec import Method
from app.jobs.actuals import JobActuals
from app.jobs.metered import Metered
from app.jobs.spec import JobSpec, ModelRef
from app.models import Job, JobStatus
from tests.conftest import auth
from tests.jobs.jobs_support import child_pid, get, kill_worker, submit, wait_status
from tests.support import ServiceEnv, WorkerProcess, start_worker, wait_for

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
FAKE_GPU = "T4"  # its own queue: only the workers started here take the job
STEPS = 60  # long enough to be killed mid-run, short enough to finish on the retry


def _progress(client: Any, keys: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 500}, headers=auth(keys["read"]))
    return [e for e in r.json()["items"] if e.get("step")]


def test_a_job_whose_worker_is_killed_costs_the_sum_of_both_attempts(
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    body = job_body("lora", hardware={"gpu": FAKE_GPU, "provider": "aws"}, max_steps=STEPS)
    job = submit(app_client, keys, body)

    def training_on(worker: WorkerProcess) -> Callable[[], bool]:
        def check() -> bool:
            now = get(app_client, keys, job["id"])
            return bool(
                now["status"] == "running"
                and now["worker"] == worker.hostname
                and child_pid(app_client, keys, job["id"])
                and _progress(app_client, keys, job["id"])
            )

        return check

    name = f"killed-{uuid.uuid4().hex[:6]}"
    with start_worker(service_env, gpu=FAKE_GPU, hostname=name, log=tmp_path / "w1.log") as w1:
        wait_for(training_on(w1), timeout=240, interval=0.5, what="attempt 1 training")
        kill_worker(w1)
    name = f"retry-{uuid.uuid4().hex[:6]}"
    with start_worker(service_env, gpu=FAKE_GPU, hostname=name, log=tmp_path / "w2.log") as w2:
        done = wait_status(app_client, keys, job["id"], timeout=480)
    assert done["status"] == "succeeded", (done["error"], w2.output()[-2000:])
    assert done["attempts"] == 2
    first, second = done["attempt_costs"]
    assert (first["attempt"], first["outcome"]) == (1, "lost")
    assert (second["attempt"], second["outcome"]) == (2, "succeeded")
    assert first["cost_usd"] > 0 and first["gpu_hours"] > 0  # the lost attempt is billed
    assert second["cost_usd"] > 0
    assert done["act_cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"])
    assert done["act_gpu_hours"] == pytest.approx(first["gpu_hours"] + second["gpu_hours"])
    # The lost attempt is billed the time its worker was seen alive, at the job's price.
    assert first["cost_usd"] == pytest.approx(first["gpu_hours"] * done["price_per_gpu_hour"])


def test_a_cancel_that_loses_the_race_with_the_end_is_recorded_and_billed(
    app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    from worker import job_rows

    job = submit(app_client, keys, job_body("lora", hardware={"gpu": FAKE_GPU, "provider": "aws"}))
    claim = job_rows.claim(job["id"], hostname="racer@test")
    assert isinstance(claim, job_rows.Claim)
    r = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
    assert r.status_code == 202, r.text
    # The run ended (succeeded) before the worker saw the cancel request.
    actuals = JobActuals(
        wall_s=7.2,
        gpu_hours=0.002,
        num_gpus=1,
        price_per_gpu_hour=job["price_per_gpu_hour"],
        cost_usd=0.002 * job["price_per_gpu_hour"],
        steps=3,
        tokens=1200,
    )
    assert job_rows.finish(
        job["id"],
        attempt=claim.attempt,
        status=JobStatus.SUCCEEDED,
        detail="finished",
        result=Metered(actuals=actuals),
    )
    done = get(app_client, keys, job["id"])
    assert done["status"] == "succeeded"
    assert "cancel request came after the run ended" in done["status_detail"]
    assert done["act_cost_usd"] == pytest.approx(actuals.cost_usd)
    assert done["act_tokens"] == 1200
    assert [a["outcome"] for a in done["attempt_costs"]] == ["succeeded"]
    events = app_client.get(f"/v1/jobs/{job['id']}/events", headers=auth(keys["read"])).json()[
        "items"
    ]
    assert any("lost the race" in (e["message"] or "") for e in events)
    with session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.cancel_requested_at is not None


def test_a_retry_gets_what_is_left_of_the_jobs_budget(service_env: ServiceEnv) -> None:
    from worker.job_rows import Claim
    from worker.jobs import launch_of
    from worker.training.spec import MIN_BUDGET_USD

    def budget(billed: float) -> float:
        claim = Claim(
            job_id="job_x",
            attempt=2,
            spec=JobSpec(method=Method.LORA, model=ModelRef(hub_id="o/m"), max_cost_usd=1.0),
            dataset_url=None,
            started_at_epoch=0.0,
            billed_usd=billed,
        )
        launched = launch_of(claim, dataset_path=Path("d.jsonl"))
        assert launched.spec.max_cost_usd == 1.0  # the job's own budget is kept as submitted
        return float(launched.budget_usd or 0.0)

    assert budget(0.0) == 1.0
    assert budget(0.25) == pytest.approx(0.75)
    assert budget(3.0) == MIN_BUDGET_USD  # spent already: the retry stops at once
