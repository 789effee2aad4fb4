"""A real job on the embedded defaults `make run` uses: SQLite database, SQLite-backed broker.

The rest of the suite runs on PostgreSQL and Redis. SQLite hands stored instants back naive
where PostgreSQL hands them back aware, so the whole path (claim, heartbeats, billing each
attempt, the report) runs here once on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth import service as keys_service
from app.db import session_scope
from app.kit.migrate import upgrade_head
from app.main import create_app
from app.models import Scope
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth
from tests.jobs.jobs_support import upload_dataset, wait_status
from tests.support import ServiceEnv, pointed_at, start_worker

pytestmark = pytest.mark.slow
MODEL = "embedded-tiny"
SERVICE_VARIABLES = ("TUNECOST_DATABASE_URL", "TUNECOST_BROKER_URL")


@pytest.fixture
def embedded(service_env: ServiceEnv, tmp_path: Path) -> Iterator[ServiceEnv]:
    """A migrated SQLite database, a SQLite broker and a CPU worker on both."""
    env = replace(
        service_env,
        database_url=f"sqlite:///{tmp_path / 'tunecost.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
    )
    upgrade_head(env.database_url)
    make_tiny_model(env.model_root / MODEL)
    name = f"embedded-{uuid.uuid4().hex[:6]}"
    with (
        pointed_at({var: env.variables()[var] for var in SERVICE_VARIABLES}),
        start_worker(env, gpu="cpu", hostname=name, log=tmp_path / "worker.log"),
    ):
        yield env


def test_a_job_runs_and_is_billed_on_sqlite(embedded: ServiceEnv, tmp_path: Path) -> None:
    with session_scope() as session:
        _, key = keys_service.create(session, name="embedded", scope=Scope.SUBMIT, team="e")
    data = make_tiny_dataset(tmp_path / "data.jsonl", n=40, fmt="text")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        dataset_id = upload_dataset(client, key, data, model_path=MODEL)
        body = {
            "method": "lora",
            "model": {"path": MODEL},
            "dataset_id": dataset_id,
            "training": {"seq_len": 32, "micro_batch_size": 2, "precision": "fp32"},
            "hardware": {"gpu": "cpu", "provider": "aws"},
            "max_steps": 3,
            "eval_fraction": 0.0,
        }
        resp = client.post("/v1/jobs", json=body, headers=auth(key))
        assert resp.status_code == 201, resp.text
        job = wait_status(client, {"read": key, "submit": key}, resp.json()["id"])
        assert job["status"] == "succeeded", (job["error"], job["status_detail"])
        assert job["attempts"] == 1 and job["act_gpu_hours"] > 0
        assert job["finished_at"].endswith("Z")
        report = client.get(
            "/v1/reports/estimate-vs-actual", params={"group_by": "method"}, headers=auth(key)
        )
        assert report.status_code == 200, report.text
