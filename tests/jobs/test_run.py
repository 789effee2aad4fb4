"""Jobs run for real on the CPU test worker (Redis + PostgreSQL + a Celery worker process).

Each method trains the tiny model to `succeeded` with actuals, errors and an artifact; bad jobs
fail with a clear message and the worker takes the next one; cancel ends the child within 10 s;
a budget cap stops a run as `budget_exceeded`.
"""

from __future__ import annotations

import io
import math
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.config import get_settings
from devtools.tinymodel import make_tiny_dataset
from tests.conftest import auth
from tests.jobs.jobs_support import (
    child_pid,
    events,
    get,
    process_gone,
    submit,
    wait_status,
)
from tests.support import ServiceEnv, WorkerProcess, wait_for

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
CANCEL_DEADLINE_S = 10  # the promise: cancel ends the training process within 10 s
WEIGHTS = {"full": "model.safetensors", "lora": "adapter_model.safetensors"}
BUDGET_S = 5  # seconds of the CPU box the budget test pays for


def _archive_sizes(resp: Any, fmt: str) -> dict[str, int]:
    data = io.BytesIO(resp.content)
    if fmt == "zip":
        with zipfile.ZipFile(data) as archive:
            return {i.filename: i.file_size for i in archive.infolist()}
    with tarfile.open(fileobj=data, mode="r:") as tar:
        return {m.name: m.size for m in tar.getmembers()}


def _check_success(client: Any, keys: dict[str, str], job: dict[str, Any], fmt: str) -> None:
    assert job["status"] == "succeeded", (job["error"], job["status_detail"])
    assert job["attempts"] == 1 and job["finished_at"] is not None
    actuals = job["actuals"]
    assert actuals["stop_reason"] == "completed" and actuals["steps"] == job["max_steps"]
    assert job["act_wall_s"] > 0 and job["act_tokens"] > 0 and job["act_tokens_per_s"] > 0
    assert job["act_gpu_hours"] == pytest.approx(job["act_wall_s"] / 3600)
    assert job["act_cost_usd"] == pytest.approx(job["act_gpu_hours"] * job["price_per_gpu_hour"])
    assert job["act_peak_kind"] == "cpu_rss" and job["act_peak_bytes"] > 0
    assert job["act_mfu"] is not None and job["act_mfu"] > 0
    assert math.isfinite(job["eval_loss"])
    assert actuals["library_versions"]["torch"] and actuals["device_name"]

    weights = actuals["artifact_weights_bytes"]
    pairs = {
        "cost_usd": (job["est_cost_usd"], job["act_cost_usd"]),
        "gpu_hours": (job["est_gpu_hours"], job["act_gpu_hours"]),
        "peak_bytes": (job["est_peak_bytes"], job["act_peak_bytes"]),
        "artifact_bytes": (job["est_artifact_bytes"], weights),
    }
    assert job["errors"]["complete_run"] is True
    for name, (est, act) in pairs.items():
        got = job["errors"][name]
        assert (got["estimated"], got["actual"]) == (est, act), name
        assert got["error_pct"] == pytest.approx((est - act) / act * 100), name

    resp = client.get(f"/v1/jobs/{job['id']}/artifact?format={fmt}", headers=auth(keys["submit"]))
    assert resp.status_code == 200
    assert resp.headers["content-disposition"].endswith(f'{job["id"]}.{fmt}"')
    sizes = _archive_sizes(resp, fmt)
    assert sum(sizes.values()) == job["artifact_bytes"] == int(resp.headers["x-artifact-bytes"])
    weight_file = WEIGHTS["full" if job["method"] == "full" else "lora"]
    assert sizes[f"{job['id']}/{weight_file}"] == weights

    progress = [e for e in events(client, keys, job["id"]) if e["kind"] == "progress"]
    assert progress, "no progress events were written"
    assert progress[-1]["step"] == progress[-1]["total_steps"] == job["max_steps"]
    steps = [e["step"] for e in progress]
    assert steps == sorted(steps)
    assert all(e["accrued_cost_usd"] >= 0 and e["loss"] is not None for e in progress)


def test_bad_jobs_fail_clearly_and_the_worker_takes_the_next(
    cpu_worker: WorkerProcess,
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
    service_env: ServiceEnv,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    # A model folder whose config is fine (so it can be estimated) but that has no weights.
    broken = service_env.model_root / "no-weights"
    broken.mkdir(exist_ok=True)
    shutil.copy(tiny_model / "config.json", broken / "config.json")
    no_weights = submit(app_client, keys, job_body("lora", model={"path": "no-weights"}))

    # A dataset whose stored file vanished after upload.
    path = make_tiny_dataset(tmp_path / "gone.jsonl", n=20, fmt="text")
    with path.open("rb") as fh:
        up = app_client.post(
            "/v1/datasets", files={"file": ("gone.jsonl", fh)}, headers=auth(keys["submit"])
        ).json()
    (Path(get_settings().storage_root) / up["storage_path"]).unlink()  # the key under the root
    no_data = submit(app_client, keys, job_body("lora", dataset_id=up["id"]))

    # Full fine-tuning with an absurd learning rate: the loss becomes NaN or infinite.
    diverges = submit(app_client, keys, job_body("full", learning_rate=1e30, max_steps=8))
    good = submit(app_client, keys, job_body("lora", max_steps=4))

    failed = {
        name: wait_status(app_client, keys, job["id"])
        for name, job in (("weights", no_weights), ("data", no_data), ("nan", diverges))
    }
    assert all(j["status"] == "failed" for j in failed.values()), failed
    assert failed["weights"]["error"].startswith("model_load:")
    assert "missing from storage" in failed["data"]["error"]
    assert failed["nan"]["error"].startswith("nan_loss:") and "diverged" in failed["nan"]["error"]
    for job in failed.values():
        assert events(app_client, keys, job["id"])[-1]["message"].startswith("failed: ")

    after = wait_status(app_client, keys, good["id"])
    assert after["status"] == "succeeded" and after["worker"] == cpu_worker.hostname
    assert cpu_worker.proc.poll() is None


def test_each_method_trains_to_success_with_actuals_errors_and_artifact(
    cpu_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    jobs = {m: submit(app_client, keys, job_body(m)) for m in ("full", "lora", "qlora")}
    for method, job in jobs.items():
        done = wait_status(app_client, keys, job["id"])
        assert done["worker"] == cpu_worker.hostname
        _check_success(app_client, keys, done, "zip" if method == "lora" else "tar")


def test_cancel_ends_the_training_child_within_10_s(
    cpu_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    long_run = dict(job_body()["training"], epochs=1000)
    job = submit(app_client, keys, job_body("lora", training=long_run, max_steps=None))
    url = f"/v1/jobs/{job['id']}"

    def training() -> bool:
        return any(e["kind"] == "progress" for e in events(app_client, keys, job["id"]))

    wait_for(training, timeout=420, interval=0.5, what="the first progress event")
    pid = child_pid(app_client, keys, job["id"])
    assert pid is not None and not process_gone(pid)

    resp = app_client.post(url + "/cancel", headers=auth(keys["submit"]))
    assert resp.status_code == 202 and resp.json()["status"] == "cancel_requested"
    wait_for(lambda: process_gone(pid), timeout=CANCEL_DEADLINE_S, what="the child to end")
    done = wait_status(app_client, keys, job["id"], timeout=CANCEL_DEADLINE_S)
    assert done["status"] == "cancelled" and done["cancel_requested_at"] is not None
    assert done["act_wall_s"] > 0 and done["actuals"]["steps"] > 0
    assert done["errors"]["complete_run"] is False and "cost_usd" not in done["errors"]
    messages = [e["message"] for e in events(app_client, keys, job["id"])]
    assert "cancel requested" in messages
    assert get(app_client, keys, job["id"])["status"] == "cancelled"


def test_budget_cap_stops_the_run_as_budget_exceeded(
    cpu_worker: WorkerProcess,
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
) -> None:
    long_run = dict(job_body()["training"], epochs=1000)
    body = job_body("lora", training=long_run, max_steps=None)
    estimate = app_client.post(
        "/v1/estimates",
        json={
            "model": body["model"],
            "dataset": {"dataset_id": body["dataset_id"]},
            "methods": ["lora"],
            "training": long_run,
            "hardware": body["hardware"],
        },
        headers=auth(keys["read"]),
    )
    assert estimate.status_code == 201, estimate.text
    price = estimate.json()["results"]["lora"]["price_per_gpu_hour"]  # what the job will pay
    # Money for BUDGET_S seconds of the CPU box from the claim: it runs out during start-up or
    # the first steps (what a stop mid-training saves is tests/training/test_job.py's), far
    # short of 57,000 steps.
    budget = price * BUDGET_S / 3600
    job = submit(app_client, keys, {**body, "max_cost_usd": budget, "force": True})
    assert job["price_per_gpu_hour"] == price
    done = wait_status(app_client, keys, job["id"])
    assert done["status"] == "budget_exceeded", (done["error"], done["status_detail"])
    assert done["act_cost_usd"] >= budget
    # Stopped within 10% of the budget: crossed while the child starts or loads, it is ended
    # as soon as the worker reads the accrued cost (every POLL_S, 0.2 s) (#24)
    over = done["act_cost_usd"] / budget - 1
    print(f"budget ${budget:.6f}: stopped at ${done['act_cost_usd']:.6f} ({over:+.1%})")
    assert done["act_cost_usd"] <= 1.1 * budget
    steps = done["actuals"]["steps"]
    assert steps < done["estimate"]["steps"]
    # It saves what it has: an artifact exactly when a step ran before the stop.
    assert (done["artifact_bytes"] is not None) == (steps > 0), (steps, done["artifact_bytes"])
    assert done["errors"]["complete_run"] is False
