"""Faults survived, nothing lost: real services stopped and restarted under queued and running jobs.

Each test runs against a private PostgreSQL cluster and a private Redis (tests/private_services.py)
so that stopping them never disturbs the machine's shared servers or other tests. Delivery is
at-least-once (late acks, redelivery, re-sending) with an idempotent task: a job's row is claimed
atomically, so a duplicate message is skipped and each job trains once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.private_services import (
    PrivatePostgres,
    PrivateRedis,
    free_port,
    private_postgres,
    private_redis,
)
from tests.support import ROOT, ServiceEnv, clear_caches, start_worker, wait_for

TRAINING = {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32", "optimizer": "adamw"}
FINAL = {"succeeded", "failed", "cancelled", "budget_exceeded"}
# Long enough that the database is down for part of training (a tiny step is milliseconds idle,
# far more on a loaded 2-core machine), short enough for CI.
MID_JOB_STEPS = 200
# A freshly started API imports torch/transformers for its first estimate: allow for it.
HTTP_TIMEOUT_S = 120


@dataclass
class FaultEnv:
    env: ServiceEnv
    pg: PrivatePostgres
    redis: PrivateRedis
    client: Any
    headers: dict[str, str]
    dataset_id: str
    tmp: Path


@pytest.fixture(scope="module")
def fault_env(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultEnv]:
    from fastapi.testclient import TestClient

    from app.auth import service
    from app.db import session_scope
    from app.kit.migrate import upgrade_head
    from app.main import create_app
    from app.models import Scope

    tmp = tmp_path_factory.mktemp("faults")
    with private_postgres() as pg, private_redis(tmp / "redis") as redis_server:
        admin = create_engine(pg.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "tunecost"'))
        admin.dispose()
        url = pg.url.rsplit("/", 1)[0] + "/tunecost"
        upgrade_head(url)
        env = ServiceEnv(
            database_url=url,
            broker_url=redis_server.url,
            storage_root=tmp / "storage",
            model_root=tmp / "models",
            lock_dir=tmp / "device-locks",
        )
        env.model_root.mkdir()
        make_tiny_model(env.model_root / "tiny", vocab_size=384, hidden_size=64, layers=2)
        os.environ.update(env.variables())
        clear_caches()
        with session_scope() as session:
            _, secret = service.create(session, name="faults", scope=Scope.SUBMIT, team="ops")
        headers = {"Authorization": f"Bearer {secret}"}
        data = make_tiny_dataset(tmp / "data.jsonl", n=120, fmt="text")
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            with data.open("rb") as fh:
                r = client.post(
                    "/v1/datasets",
                    files={"file": ("data.jsonl", fh, "application/x-ndjson")},
                    data={"name": "faults", "model_path": "tiny"},
                    headers=headers,
                )
            assert r.status_code == 201, r.text
            yield FaultEnv(env, pg, redis_server, client, headers, r.json()["id"], tmp)
    os.environ.update(service_env.variables())
    clear_caches()


def _job(f: FaultEnv, *, max_steps: int, method: str = "lora") -> dict[str, Any]:
    return {
        "method": method,
        "model": {"path": "tiny"},
        "dataset_id": f.dataset_id,
        "training": TRAINING,
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "max_steps": max_steps,
        "tags": {"team": "ops", "test": "faults"},
    }


def _submit(f: FaultEnv, body: dict[str, Any]) -> str:
    r = f.client.post("/v1/jobs", json=body, headers=f.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _get(f: FaultEnv, job_id: str) -> dict[str, Any]:
    r = f.client.get(f"/v1/jobs/{job_id}", headers=f.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _wait_final(f: FaultEnv, job_id: str, timeout: float = 300) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: j if (j := _get(f, job_id))["status"] in FINAL else None,
            timeout=timeout,
            interval=1,
            what=f"job {job_id} to finish",
        )
    )


def _events(f: FaultEnv, job_id: str) -> list[dict[str, Any]]:
    r = f.client.get(f"/v1/jobs/{job_id}/events", headers=f.headers, params={"limit": 500})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["items"] if e.get("step")]


def _worker(f: FaultEnv, name: str) -> Any:
    return start_worker(
        f.env, gpu="cpu", hostname=f"{name}-{uuid.uuid4().hex[:6]}", log=f.tmp / f"{name}.log"
    )


def test_broker_restart_with_jobs_queued_loses_none_and_runs_each_once(f: FaultEnv) -> None:
    job_ids = [_submit(f, _job(f, max_steps=4)) for _ in range(2)]
    assert all(_get(f, j)["status"] == "queued" for j in job_ids)
    f.redis.stop()
    f.redis.start()
    with _worker(f, "after-broker-restart"):
        jobs = [_wait_final(f, j) for j in job_ids]
    for job in jobs:
        assert job["status"] == "succeeded", (job["error"], job["status_detail"])
        assert job["attempts"] == 1, job  # trained once, not twice
        assert job["act_tokens"] and job["act_tokens"] > 0


def test_postgres_restart_mid_job_records_the_actuals(f: FaultEnv) -> None:
    with _worker(f, "pg-restart"):
        job_id = _submit(f, _job(f, max_steps=MID_JOB_STEPS))
        wait_for(
            lambda: _events(f, job_id),
            timeout=180,
            interval=0.5,
            what="the job's first progress event",
        )
        f.pg.stop("fast")
        time.sleep(5)  # the worker's writes fail meanwhile; training goes on
        f.pg.start()
        job = _wait_final(f, job_id, timeout=600)
    assert job["status"] == "succeeded", job
    assert job["act_wall_s"] and job["act_wall_s"] > 5
    assert max(e["step"] or 0 for e in _events(f, job_id)) == MID_JOB_STEPS
    assert job["act_cost_usd"] is not None and job["artifact_bytes"]
    assert job["errors"], job  # estimate-vs-actual errors computed after the restart


def test_api_restart_while_a_job_runs_changes_nothing_for_it(f: FaultEnv) -> None:
    port = free_port()
    env = {**os.environ, **f.env.variables()}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: _up(port), timeout=120, what="API up")
        return proc

    base = f"http://127.0.0.1:{port}"
    with _worker(f, "api-restart"):
        api = serve()
        try:
            body = _job(f, max_steps=MID_JOB_STEPS)
            r = httpx.post(f"{base}/v1/jobs", json=body, headers=f.headers, timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            wait_for(
                lambda: (
                    httpx.get(
                        f"{base}/v1/jobs/{job_id}", headers=f.headers, timeout=HTTP_TIMEOUT_S
                    ).json()["status"]
                    == "running"
                ),
                timeout=120,
                what="job running",
            )
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=30)
            api = serve()
            job = wait_for(
                lambda: (
                    (
                        j := httpx.get(
                            f"{base}/v1/jobs/{job_id}", headers=f.headers, timeout=HTTP_TIMEOUT_S
                        ).json()
                    )["status"]
                    in FINAL
                    and j
                ),
                timeout=600,
                interval=1,
                what="job to finish after the API restart",
            )
        finally:
            api.terminate()
            api.wait(timeout=30)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def f(fault_env: FaultEnv) -> FaultEnv:
    return fault_env
