"""A forecast on seeded history equals one computed by hand, in the report and a budget's burn.

Seeded at T (now): a custom period [T-3d, T+27d); team ml's jobs tagged suite=S:
  finished  A  project=p  T-1d   $3     in the period and in the last week
            B  project=p  T-5d   $4     in the last week only (before the period)
            C  project=p  T-10d  $100   neither
            E  project=q  T-1d   $50    another project
  running   R  project=p  estimate $10 (prior: x0.7..x1.5), 2 GPUs at $2/GPU-h; attempt 1 lost
               and billed $1, attempt 2 held 30 minutes so far: accrued 1 + 0.5 h x 2 x 2 = $3
  queued    Q1 project=p  estimate $6 (calibrated: x0.8..x1.25), capped at max_cost_usd $5
            Q2 project=p  estimate $2 (prior)
and team ops's job F (project=p, T-1d, $70): another tenant, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.db import session_scope
from app.models import JobStatus
from tests.budgets.budgets_support import active_job, unique
from tests.conftest import auth
from tests.reports.factory import make_job

DAY = 86_400.0


@dataclass(frozen=True)
class History:
    suite: str
    start: datetime
    end: datetime


@pytest.fixture(scope="module")
def history(service_env: object) -> History:
    now = datetime.now(UTC)
    suite = unique("forecast")
    tags = {"suite": suite, "project": "p"}
    with session_scope() as session:
        for days, cost, project, team in (
            (1, 3.0, "p", "ml"),
            (5, 4.0, "p", "ml"),
            (10, 100.0, "p", "ml"),
            (1, 50.0, "q", "ml"),
            (1, 70.0, "p", "ops"),
        ):
            make_job(
                session,
                team=team,
                tags={"suite": suite, "project": project},
                finished_at=now - timedelta(days=days),
                act_cost=cost,
            )
        started = now - timedelta(hours=3)
        active_job(
            session,
            status=JobStatus.RUNNING,
            est_cost=10.0,
            basis="prior",
            tags=tags,
            price=2.0,
            num_gpus=2,
            attempts=[
                (started, started + timedelta(hours=1), "lost", 1.0),
                (started + timedelta(hours=2), started + timedelta(hours=2.5), "running", None),
            ],
        )
        active_job(
            session,
            status=JobStatus.QUEUED,
            est_cost=6.0,
            max_cost=5.0,
            basis="calibrated",
            tags=tags,
        )
        active_job(session, status=JobStatus.QUEUED, est_cost=2.0, basis="prior", tags=tags)
    return History(suite=suite, start=now - timedelta(days=3), end=now + timedelta(days=27))


def _expected_p(days_left: float) -> dict[str, float]:
    rate = (3.0 + 4.0) / 7
    known = 3.0 + 3.0 + rate * days_left
    return {
        "spent_usd": 3.0,
        "accrued_usd": 3.0,
        "committed_usd": (10 - 3) + 5.0 + 2.0,
        "committed_low_usd": (10 * 0.7 - 3) + 6 * 0.8 + 2 * 0.7,
        "committed_high_usd": (10 * 1.5 - 3) + 5.0 + 2 * 1.5,
        "daily_rate_usd": rate,
        "projected_usd": known + 14.0,
        "projected_low_usd": known + 4.0 + 4.8 + 1.4,
        "projected_high_usd": known + 12.0 + 5.0 + 3.0,
        "finished_jobs": 1,
        "active_jobs": 3,
    }


def _days_left(end: datetime, as_of: str) -> float:
    return (end - datetime.fromisoformat(as_of.replace("Z", "+00:00"))).total_seconds() / DAY


def _check(row: dict[str, Any], want: dict[str, float]) -> None:
    for name, value in want.items():
        assert row[name] == pytest.approx(value, abs=1e-6), name


def test_the_forecast_of_a_tag_equals_the_hand_computed_one(
    app_client: Any, keys: dict[str, str], history: History
) -> None:
    params = {
        "period": "custom",
        "from": history.start.isoformat(),
        "to": history.end.isoformat(),
        "tag.suite": history.suite,
        "tag.project": "p",
    }
    resp = app_client.get("/v1/reports/forecast", params=params, headers=auth(keys["read"]))
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    left = _days_left(history.end, doc["as_of"])
    assert doc["days_left"] == pytest.approx(left) and 26.9 < left <= 27
    assert doc["rate_window_days"] == 7 and doc["period"]["kind"] == "custom"
    _check(doc["total"], _expected_p(left))


def test_grouped_by_tag_each_group_has_its_own_forecast(
    app_client: Any, keys: dict[str, str], history: History
) -> None:
    params = {
        "period": "custom",
        "from": history.start.isoformat(),
        "to": history.end.isoformat(),
        "tag.suite": history.suite,
        "group_by": "tag:project",
    }
    doc = app_client.get("/v1/reports/forecast", params=params, headers=auth(keys["read"])).json()
    left = _days_left(history.end, doc["as_of"])
    rows = {row["group"]: row for row in doc["rows"]}
    assert set(rows) == {"p", "q"}
    _check(rows["p"], _expected_p(left))
    q_rate = 50.0 / 7
    _check(
        rows["q"],
        {
            "spent_usd": 50.0,
            "accrued_usd": 0.0,
            "committed_usd": 0.0,
            "daily_rate_usd": q_rate,
            "projected_usd": 50.0 + q_rate * left,
        },
    )
    assert doc["total"]["spent_usd"] == pytest.approx(53.0)


def test_an_admin_sees_every_tenant(
    app_client: Any, keys: dict[str, str], history: History
) -> None:
    params = {
        "period": "custom",
        "from": history.start.isoformat(),
        "to": history.end.isoformat(),
        "tag.suite": history.suite,
        "tag.project": "p",
    }
    doc = app_client.get("/v1/reports/forecast", params=params, headers=auth(keys["admin"])).json()
    assert doc["total"]["spent_usd"] == pytest.approx(3.0 + 70.0)


def test_a_budget_over_the_same_jobs_burns_the_same(
    app_client: Any, keys: dict[str, str], history: History
) -> None:
    # The budget counts team ml's jobs tagged suite=S; project q's $50 is then in it too.
    body = {
        "name": f"forecast {history.suite}",
        "amount_usd": 100.0,
        "tag_key": "suite",
        "tag_value": history.suite,
        "team": "ml",
        "period": "custom",
        "starts_at": history.start.isoformat(),
        "ends_at": history.end.isoformat(),
    }
    made = app_client.post("/v1/budgets", json=body, headers=auth(keys["admin"]))
    assert made.status_code == 201, made.text
    burn = made.json()["burn"]
    left = burn["days_left"]
    want = _expected_p(left)
    rate = want["daily_rate_usd"] + 50.0 / 7
    assert burn["spent_usd"] == pytest.approx(53.0)
    assert burn["committed_usd"] == pytest.approx(want["committed_usd"])
    assert burn["total_usd"] == pytest.approx(53.0 + 3.0 + 14.0)
    assert burn["left_usd"] == pytest.approx(100.0 - 70.0)
    assert burn["daily_rate_usd"] == pytest.approx(rate)
    assert burn["projected_usd"] == pytest.approx(70.0 + rate * left)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"period": "custom", "from": "2025-01-01"}, "from"),
        ({"period": "month", "from": "2025-01-01", "to": "2025-02-01"}, "from"),
        ({"period": "year"}, "period"),
        ({"group_by": "job"}, "group_by"),
    ],
)
def test_bad_forecast_parameters_are_422(
    app_client: Any, keys: dict[str, str], params: dict[str, str], name: str
) -> None:
    resp = app_client.get("/v1/reports/forecast", params=params, headers=auth(keys["read"]))
    assert resp.status_code == 422, resp.text
    assert name in resp.json()["errors"][0]["loc"]
