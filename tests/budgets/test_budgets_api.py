"""Budgets over HTTP: who may set them, what is refused at submit, which thresholds are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.budgets.budgets_support import budget_body, estimate, job_body, unique
from tests.conftest import auth
from tests.jobs.conftest import dataset_id, tiny_model  # noqa: F401 (fixtures)

URL = "/v1/budgets"


@pytest.fixture(scope="module")
def priced(app_client: Any, keys: dict[str, str], dataset_id: str) -> tuple[str, float]:  # noqa: F811
    """An estimate no worker will run, and its LoRA cost."""
    return estimate(app_client, keys["submit"], dataset_id)


def _create(client: Any, keys: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(URL, json=body, headers=auth(keys["admin"]))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_only_admin_keys_set_budgets_and_teams_see_their_own(
    app_client: Any, keys: dict[str, str]
) -> None:
    project = unique("p")
    refused = app_client.post(URL, json=budget_body(project, 10), headers=auth(keys["submit"]))
    assert refused.status_code == 403, refused.text
    made = _create(app_client, keys, budget_body(project, 10))
    other = _create(app_client, keys, budget_body(project, 10, team="ops"))
    assert (made["team"], made["tag_key"], made["tag_value"]) == ("ml", "project", project)
    assert made["thresholds_pct"] == [50.0, 80.0, 100.0] and made["action"] == "warn"
    seen = app_client.get(URL, headers=auth(keys["read"])).json()["items"]
    ids = {b["id"] for b in seen}
    assert made["id"] in ids and other["id"] not in ids  # team ops is another tenant
    hidden = app_client.get(f"{URL}/{other['id']}", headers=auth(keys["read"]))
    assert hidden.status_code == 404
    again = app_client.post(URL, json=budget_body(project, 5), headers=auth(keys["admin"]))
    assert again.status_code == 409 and "already has a budget" in again.json()["detail"]
    patched = app_client.patch(
        f"{URL}/{made['id']}",
        json={"amount_usd": 20, "action": "refuse"},
        headers=auth(keys["admin"]),
    )
    assert patched.status_code == 200 and patched.json()["amount_usd"] == 20
    assert patched.json()["action"] == "refuse"
    gone = app_client.delete(f"{URL}/{made['id']}", headers=auth(keys["admin"]))
    assert gone.status_code == 200 and gone.json()["id"] == made["id"]
    assert app_client.get(f"{URL}/{made['id']}", headers=auth(keys["read"])).status_code == 404


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"amount_usd": 0}, "amount_usd"),
        ({"thresholds_pct": [0, 50]}, "thresholds_pct"),
        ({"period": "custom"}, "body"),
        ({"starts_at": "2030-01-01T00:00:00Z"}, "body"),
        ({"tag_key": "no spaces"}, "tag_key"),
        ({"period": "weekly"}, "period"),
    ],
)
def test_bad_budgets_are_422_naming_the_field(
    app_client: Any, keys: dict[str, str], over: dict[str, Any], field: str
) -> None:
    resp = app_client.post(
        URL, json=budget_body(unique("p"), 10, **over), headers=auth(keys["admin"])
    )
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert field in resp.json()["errors"][0]["loc"]


def test_an_admin_names_the_team(app_client: Any, keys: dict[str, str]) -> None:
    body = budget_body(unique("p"), 10)
    del body["team"]
    resp = app_client.post(URL, json=body, headers=auth(keys["admin"]))
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["team"]


def test_a_hard_budget_refuses_the_job_that_would_cross_it(
    app_client: Any, keys: dict[str, str], priced: tuple[str, float]
) -> None:
    estimate_id, cost = priced
    project = unique("hard")
    budget = _create(
        app_client, keys, budget_body(project, cost * 1.5, action="refuse", thresholds_pct=[50, 90])
    )
    first = app_client.post(
        "/v1/jobs", json=job_body(estimate_id, project), headers=auth(keys["submit"])
    )
    assert first.status_code == 201, first.text
    second = app_client.post(
        "/v1/jobs", json=job_body(estimate_id, project), headers=auth(keys["submit"])
    )
    assert second.status_code == 409, second.text
    problem = second.json()
    assert problem["budget"]["id"] == budget["id"]
    assert problem["budget"]["left_usd"] == pytest.approx(cost * 0.5)
    assert problem["budget"]["committed_usd"] == pytest.approx(cost)
    assert problem["estimate"]["counted_usd"] == pytest.approx(cost)
    assert f"budget {budget['name']!r}" in problem["detail"]
    assert f"${cost * 0.5:.4f} left" in problem["detail"]

    burn = app_client.get(f"{URL}/{budget['id']}", headers=auth(keys["read"])).json()["burn"]
    assert burn["committed_usd"] == pytest.approx(cost) and burn["active_jobs"] == 1
    assert burn["left_usd"] == pytest.approx(cost * 0.5)
    # 1/1.5 = 67% of the amount is committed: the 50% threshold, not the 90% one.
    assert [a["threshold_pct"] for a in burn["alerts"]] == [50.0]

    # A cheaper job fits: capped by max_cost_usd, it counts what the cap allows.
    capped = job_body(estimate_id, project, max_cost_usd=cost * 0.4, force=True)
    fits = app_client.post("/v1/jobs", json=capped, headers=auth(keys["submit"]))
    assert fits.status_code == 201, fits.text
    burn = app_client.get(f"{URL}/{budget['id']}", headers=auth(keys["read"])).json()["burn"]
    assert burn["committed_usd"] == pytest.approx(cost * 1.4)
    assert [a["threshold_pct"] for a in burn["alerts"]] == [50.0, 90.0]

    # Cancelling frees what the job had committed.
    for job in (first.json(), fits.json()):
        cancel = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
        assert cancel.status_code == 200, cancel.text
    third = app_client.post(
        "/v1/jobs", json=job_body(estimate_id, project), headers=auth(keys["submit"])
    )
    assert third.status_code == 201, third.text
    app_client.post(f"/v1/jobs/{third.json()['id']}/cancel", headers=auth(keys["submit"]))


def test_a_warn_budget_lets_the_job_through_and_records_the_crossing(
    app_client: Any, keys: dict[str, str], priced: tuple[str, float]
) -> None:
    estimate_id, cost = priced
    project = unique("soft")
    budget = _create(app_client, keys, budget_body(project, cost * 0.5))
    resp = app_client.post(
        "/v1/jobs", json=job_body(estimate_id, project), headers=auth(keys["submit"])
    )
    assert resp.status_code == 201, resp.text
    burn = app_client.get(f"{URL}/{budget['id']}", headers=auth(keys["read"])).json()["burn"]
    assert [a["threshold_pct"] for a in burn["alerts"]] == [50.0, 80.0, 100.0]
    assert burn["used_pct"] == pytest.approx(200.0)
    app_client.post(f"/v1/jobs/{resp.json()['id']}/cancel", headers=auth(keys["submit"]))


def test_a_custom_period_that_ended_counts_nothing_now(
    app_client: Any, keys: dict[str, str], priced: tuple[str, float]
) -> None:
    estimate_id, cost = priced
    project = unique("past")
    start = datetime.now(UTC) - timedelta(days=40)
    body = budget_body(
        project,
        cost * 0.1,
        action="refuse",
        period="custom",
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(days=30)).isoformat(),
    )
    budget = _create(app_client, keys, body)
    resp = app_client.post(
        "/v1/jobs", json=job_body(estimate_id, project), headers=auth(keys["submit"])
    )
    assert resp.status_code == 201, resp.text  # the budget's period is over: it holds nothing
    burn = app_client.get(f"{URL}/{budget['id']}", headers=auth(keys["read"])).json()["burn"]
    assert burn["active_jobs"] == 0 and burn["days_left"] == 0
    app_client.post(f"/v1/jobs/{resp.json()['id']}/cancel", headers=auth(keys["submit"]))
