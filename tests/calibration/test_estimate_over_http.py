"""Over HTTP: finished jobs turn the next estimate for their GPU and method calibrated."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from app.auth import service
from app.db import session_scope
from app.main import create_app
from app.models import Scope
from tests.calibration.conftest import slowed_job

REQUEST = {
    "model": "Qwen/Qwen2.5-0.5B",
    "dataset": {"total_tokens": 2_000_000},
    "methods": ["lora"],
    "hardware": {"gpu": "cpu"},
}


def _estimate(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    r = client.post("/v1/estimates", json=REQUEST, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json()["results"]["lora"])


def test_succeeded_jobs_calibrate_the_next_estimate(isolated_db: str) -> None:
    with session_scope() as session:
        # The jobs' tenant (tests/reports/factory.py): a tenant's jobs calibrate its estimates.
        _, secret = service.create(session, name="calib", scope=Scope.READ, team="ml")
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        before = _estimate(client, headers)
        assert before["basis"] == "prior"
        with session_scope() as session:
            for _ in range(3):  # the minimum the fit requires
                slowed_job(session, slowdown=2.0, gpu="cpu", method="lora")
        after = _estimate(client, headers)
    assert after["basis"] == "calibrated"
    assert after["calibration_jobs"] == 3
    # Jobs ran at half the prior efficiency: the calibrated estimate is slower and dearer.
    assert after["mfu"] < before["mfu"]
    assert after["hours"] > before["hours"] * 1.3
    assert after["cost_usd"] > before["cost_usd"]
