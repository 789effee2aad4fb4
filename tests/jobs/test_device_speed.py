"""A CPU worker measures its device at start; the first job of an unseen size is estimated with it.

Real parts: a Celery worker process that measures this machine's CPU (worker/speed.py) and
reports it in its heartbeat, an estimate that uses the measurement, and a LoRA job of a model
size no job has run before, in a database and a broker of its own (so nothing is calibrated and
no other test's worker takes the job), trained to the end. The estimate's training loop must
land within +-50% of the loop the worker metered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import session_scope
from app.models import WorkerNode
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth, key_per_scope
from tests.jobs.jobs_support import submit, wait_status
from tests.support import ServiceEnv, start_worker

pytestmark = pytest.mark.slow

# A size no other test trains: 3 layers of width 96.
MODEL = f"tiny-llama-speed-{uuid.uuid4().hex[:6]}"
SPEED_WAIT_S = 180.0  # the first measurement on a busy 2-core machine takes ~10-30 s
LOOP_TOLERANCE = 0.5  # issue 26: within +-50% uncalibrated


@pytest.fixture(scope="module")
def speed_keys(isolated_db: str) -> dict[str, str]:
    """One key per scope in the module's own database: no finished job calibrates anything."""
    return key_per_scope("speed")


@pytest.fixture(scope="module")
def measuring_worker(
    isolated_services: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A CPU worker on the module's database; its hostname once its heartbeat has a speed.

    Its temporary folder is its own, so it measures the device now (worker/speed.py caches the
    measurement in the temporary folder) rather than reading what another run measured under
    another load: the job it then runs meets the same machine its speed was measured on.
    """
    name = f"cpu-speed-{uuid.uuid4().hex[:6]}"
    folder = tmp_path_factory.mktemp("speed")
    log = folder / "worker.log"
    (folder / "tmp").mkdir()
    fresh = {"TMPDIR": str(folder / "tmp")}
    with start_worker(isolated_services, gpu="cpu", hostname=name, log=log, extra_env=fresh):
        deadline = time.monotonic() + SPEED_WAIT_S
        while time.monotonic() < deadline:
            with session_scope() as session:
                row = session.scalar(select(WorkerNode).where(WorkerNode.hostname.startswith(name)))
                if row is not None and row.host_s_per_layer is not None:
                    yield row.hostname
                    return
            time.sleep(1.0)
        pytest.fail(f"the worker reported no device speed in {SPEED_WAIT_S:.0f} s: {log}")


def test_the_first_job_of_an_unseen_size_is_estimated_from_the_measured_device(
    app_client: TestClient,
    speed_keys: dict[str, str],
    measuring_worker: str,
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    with session_scope() as session:
        row = session.get(WorkerNode, measuring_worker)
        assert row is not None and row.matmul_tflops is not None and row.memory_gbps is not None
        assert row.matmul_tflops > 0 and row.memory_gbps > 0
    make_tiny_model(
        service_env.model_root / MODEL, vocab_size=384, hidden_size=96, layers=3, heads=4,
        kv_heads=2,
    )  # fmt: skip
    data = make_tiny_dataset(tmp_path / "speed.jsonl", n=200, fmt="text")
    with data.open("rb") as fh:
        resp = app_client.post(
            "/v1/datasets",
            files={"file": ("speed.jsonl", fh, "application/x-ndjson")},
            data={"name": "speed", "model_path": MODEL},
            headers=auth(speed_keys["submit"]),
        )
    assert resp.status_code == 201, resp.text
    body = {
        "method": "lora",
        "model": {"path": MODEL},
        "dataset_id": resp.json()["id"],
        "training": {"seq_len": 128, "micro_batch_size": 4, "precision": "fp32"},
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "max_steps": 40,
    }
    job = submit(app_client, speed_keys, body)
    job = wait_status(app_client, speed_keys, job["id"])
    assert job["status"] == "succeeded", (job["error"], job["status_detail"])

    estimate = job["estimate"]
    assert estimate["basis"] == "prior" and estimate["calibration_jobs"] == 0
    time_terms = estimate["time"]
    scaled = estimate["job_scaled"]["steps"] / estimate["steps"]
    est_loop = (time_terms["total_s"] - time_terms["overhead_s"]) * scaled
    train_s = job["actuals"]["train_s"]
    assert train_s > 0
    error = (est_loop - train_s) / train_s
    print(
        f"loop estimated {est_loop:.2f} s, metered {train_s:.2f} s ({error:+.0%}); GPU-hours "
        f"estimated {job['est_gpu_hours']:.6f}, metered {job['act_gpu_hours']:.6f}"
    )
    assert abs(error) <= LOOP_TOLERANCE
