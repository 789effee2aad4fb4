"""No pooled connection is held while an estimate computes: on its own or implied by a job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.pool import QueuePool

from app.db import get_engine
from app.estimates import service as estimates_service
from tests.conftest import auth
from tests.jobs.jobs_support import IDLE_HARDWARE


@pytest.fixture
def held_during_estimates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Connections checked out of this process's pool each time the estimator runs."""
    seen: list[int] = []
    real = estimates_service.estimate

    def watched(**kwargs: Any) -> Any:
        pool = get_engine().pool
        assert isinstance(pool, QueuePool)  # PostgreSQL's pool: it counts what is checked out
        seen.append(pool.checkedout())
        return real(**kwargs)

    monkeypatch.setattr(estimates_service, "estimate", watched)
    return seen


def test_an_estimate_computes_holding_no_connection(
    app_client: Any, keys: dict[str, str], dataset_id: str, held_during_estimates: list[int]
) -> None:
    body = {
        "model": {"path": "tiny-llama"},
        "dataset": {"dataset_id": dataset_id},
        "hardware": {"gpu": "cpu"},
    }
    r = app_client.post("/v1/estimates", json=body, headers=auth(keys["read"]))
    assert r.status_code == 201, r.text
    assert held_during_estimates == [0]


def test_a_job_computes_its_implied_estimate_holding_no_connection(
    app_client: Any,
    keys: dict[str, str],
    job_body: Callable[..., dict[str, Any]],
    held_during_estimates: list[int],
) -> None:
    r = app_client.post(
        "/v1/jobs", json=job_body(hardware=IDLE_HARDWARE),
        headers={**auth(keys["submit"]), "Idempotency-Key": "no-connection-held"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert held_during_estimates == [0]
