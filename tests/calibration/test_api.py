"""GET /v1/calibration and /v1/calibration/evaluation over HTTP on the shared test database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.calibration import service
from app.db import session_scope
from tests.calibration.conftest import slowed_job
from tests.conftest import auth
from tests.reports.factory import unique


def test_fitted_values_are_shown(app_client: TestClient, keys: dict[str, str]) -> None:
    gpu = unique("gpu")  # a group of its own in the shared database
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    with session_scope() as session:
        for i, slow in enumerate((2.0, 2.1, 1.9)):
            slowed_job(
                session,
                slowdown=slow,
                mem=1.1,
                gpu=gpu,
                method="qlora",
                mfu=0.3,
                finished_at=t0 + timedelta(hours=i),
            )
        slowed_job(session, slowdown=2.0, gpu=gpu, method="full", finished_at=t0)
    r = app_client.get("/v1/calibration", headers=auth(keys["read"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["min_jobs"] == service.MIN_JOBS
    mine = {g["method"]: g for g in body["groups"] if g["gpu"] == gpu}
    qlora, full = mine["qlora"], mine["full"]
    assert qlora["used_by_estimates"] is True and qlora["jobs"] == 3
    assert qlora["mfu"] == pytest.approx(0.3 / (2.0 * 2.1 * 1.9) ** (1 / 3))
    assert qlora["memory_factor"] == pytest.approx(1.1, rel=1e-6)
    assert qlora["efficiency_sources"] == {"train_time": 3}
    assert qlora["prior_mfu"] is None  # not a catalog GPU
    assert full["used_by_estimates"] is False and full["mfu_jobs"] == 1 and full["jobs"] == 0


def test_evaluation_route(app_client: TestClient, keys: dict[str, str]) -> None:
    # Eligible jobs of its own, so there is always something to split (the database is shared).
    gpu = unique("gpu")
    t0 = datetime(2024, 2, 1, tzinfo=UTC)
    with session_scope() as session:
        for i, slow in enumerate((1.5, 1.6, 1.4, 1.5)):
            slowed_job(session, slowdown=slow, gpu=gpu, finished_at=t0 + timedelta(hours=i))
    r = app_client.get(
        "/v1/calibration/evaluation",
        params={"holdout_fraction": 0.5, "include_jobs": "true"},
        headers=auth(keys["read"]),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["overlap"] == 0 and body["before"] and body["after"]
    assert body["split_at"] is not None and body["jobs"]
    assert all(j["finished_at"] >= body["split_at"] for j in body["jobs"])


@pytest.mark.parametrize(
    ("params", "name"),
    [({"holdout_fraction": 1.5}, "holdout_fraction"), ({"split_at": "soon"}, "split_at")],
)
def test_bad_input(
    app_client: TestClient, keys: dict[str, str], params: dict[str, Any], name: str
) -> None:
    r = app_client.get("/v1/calibration/evaluation", params=params, headers=auth(keys["read"]))
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"][-1] == name


def test_needs_a_key(app_client: TestClient) -> None:
    assert app_client.get("/v1/calibration").status_code == 401
