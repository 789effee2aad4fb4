"""Real CPU jobs calibrate the next estimate: three sizes through the worker, then an unseen one.

A database, a Redis database and a worker of this module's own, so no other test's jobs enter
the fit. Job sizes differ by their number of optimizer steps; the fourth is larger than any of
the first three. Its estimate is made at submit with the calibration the first three give.
Run with `-s` to see each job's metered phases and the fit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth import service as keys_service
from app.db import session_scope
from app.main import create_app
from app.models import Scope
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth
from tests.jobs.jobs_support import upload_dataset, wait_status
from tests.support import ServiceEnv, start_worker

pytestmark = pytest.mark.slow
SEEN_STEPS = (10, 40, 80)  # three sizes, the minimum a fit needs
UNSEEN_STEPS = 160
TOLERANCE = 0.30  # issue 10: the calibrated estimate within 30% of the metered GPU-hours
MODEL = "calib-tiny"
TRAINING = {"seq_len": 64, "micro_batch_size": 4, "precision": "fp32", "optimizer": "adamw"}


@pytest.fixture(scope="module")
def own_services(isolated_services: ServiceEnv) -> Iterator[ServiceEnv]:
    """The isolated database, an emptied Redis database of our own and a CPU worker on both."""
    env = isolated_services
    make_tiny_model(env.model_root / MODEL, vocab_size=384, hidden_size=64, layers=2, heads=4)
    log = env.storage_root.parent / f"calib-worker-{uuid.uuid4().hex[:6]}.log"
    env.storage_root.mkdir(parents=True, exist_ok=True)
    name = f"calib-{uuid.uuid4().hex[:6]}"
    with start_worker(env, gpu="cpu", hostname=name, log=log):
        yield env


def _run(client: TestClient, keys: dict[str, str], dataset_id: str, steps: int) -> dict[str, Any]:
    body = {
        "method": "lora",
        "model": {"path": MODEL},
        "dataset_id": dataset_id,
        "training": TRAINING,
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "max_steps": steps,
        "eval_fraction": 0.0,
    }
    resp = client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    job = wait_status(client, keys, resp.json()["id"])
    assert job["status"] == "succeeded", (job["error"], job["status_detail"])
    return job


def _error(job: dict[str, Any]) -> float:
    error: float = (job["est_gpu_hours"] - job["act_gpu_hours"]) / job["act_gpu_hours"]
    return error


def test_calibrated_estimate_of_an_unseen_size(own_services: ServiceEnv, tmp_path: Path) -> None:
    with session_scope() as session:
        keys = {}
        for scope in (Scope.READ, Scope.SUBMIT):
            _, keys[scope.value] = keys_service.create(
                session, name=f"calib {scope}", scope=scope, team="calib"
            )
    data = make_tiny_dataset(tmp_path / "calib.jsonl", n=400, fmt="text")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        dataset_id = upload_dataset(client, keys["submit"], data, model_path=MODEL)

        seen = [_run(client, keys, dataset_id, steps) for steps in SEEN_STEPS]
        assert all(j["estimate"]["basis"] == "prior" for j in seen)
        unseen = _run(client, keys, dataset_id, UNSEEN_STEPS)
        fit = client.get("/v1/calibration", headers=auth(keys["read"])).json()

    for job in [*seen, unseen]:
        actuals = job["actuals"] or {}
        phases = {k: actuals.get(k) for k in ("startup_s", "train_s", "warmup_s", "wall_s")}
        print(
            f"job {job['max_steps']:>4} steps: est {job['est_gpu_hours'] * 3600:7.2f} s "
            f"act {job['act_gpu_hours'] * 3600:7.2f} s {phases}"
        )
    print("calibration:", [g for g in fit["groups"] if g["gpu"] == "cpu"])

    estimate = unseen["estimate"]
    assert estimate["basis"] == "calibrated" and estimate["calibration_jobs"] == 3
    assert estimate["time"]["overhead_s"] > 0
    first_error = abs(_error(seen[0]))
    unseen_error = abs(_error(unseen))
    print(f"uncalibrated error of the first job {first_error:+.0%}, calibrated {unseen_error:+.0%}")
    assert unseen_error <= TOLERANCE
    assert unseen_error < first_error
