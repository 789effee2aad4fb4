"""Eval curves through the API: two real jobs on one dataset, scored on the same held-out items.

Each job evaluates its base model, points during the run and its end; the curve is tenant-scoped
and paginated, and the two jobs' final losses compare item by item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from app.auth import service as keys_service
from app.db import session_scope
from app.evals.stats import mean_loss
from app.models import JobEval, Scope
from tests.conftest import auth
from tests.jobs.jobs_support import submit, wait_status
from tests.support import WorkerProcess

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]


def _curve(client: Any, key: str, job_id: str, **params: Any) -> dict[str, Any]:
    resp = client.get(f"/v1/jobs/{job_id}/evals", params=params, headers=auth(key))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_two_jobs_have_curves_and_compare_on_the_same_items(
    cpu_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    common = {"max_steps": 6, "eval_points": 2, "eval_fraction": 0.2, "lr_schedule": "cosine"}
    lora = submit(app_client, keys, job_body("lora", learning_rate=3e-3, **common))
    full = submit(app_client, keys, job_body("full", learning_rate=1e-3, **common))
    jobs = {j["id"]: wait_status(app_client, keys, j["id"]) for j in (lora, full)}
    assert [j["status"] for j in jobs.values()] == ["succeeded"] * 2, jobs

    curves = {jid: _curve(app_client, keys["read"], jid)["items"] for jid in jobs}
    for jid, points in curves.items():
        assert [p["step"] for p in points] == [0, 2, 4, 6]
        assert [p["final"] for p in points] == [False, False, False, True]
        costs = [p["accrued_cost_usd"] for p in points]
        assert costs == sorted(costs)
        assert points[-1]["loss"] == pytest.approx(jobs[jid]["eval_loss"])
        assert points[-1]["loss_se"] == pytest.approx(jobs[jid]["actuals"]["eval_loss_se"])
        assert points[0]["tokens"] == 0 < points[-1]["tokens"] == jobs[jid]["act_tokens"]
    ids = {p["eval_set_id"] for points in curves.values() for p in points}
    assert len(ids) == 1  # every point of both jobs: the same held-out items
    # Both start from the same base model, so their step-0 losses agree.
    assert curves[lora["id"]][0]["loss"] == pytest.approx(curves[full["id"]][0]["loss"], rel=1e-4)

    first = _curve(app_client, keys["read"], lora["id"], limit=3)
    rest = _curve(app_client, keys["read"], lora["id"], after=first["next_after"])
    assert [p["id"] for p in first["items"] + rest["items"]] == [
        p["id"] for p in curves[lora["id"]]
    ]

    resp = app_client.get(
        f"/v1/jobs/{lora['id']}/evals/compare",
        params={"with": full["id"]},
        headers=auth(keys["read"]),
    )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["difference"] == pytest.approx(jobs[lora["id"]]["eval_loss"] - full_loss(jobs, full))
    assert got["se"] > 0 and got["z"] == pytest.approx(got["difference"] / got["se"])
    with session_scope() as session:
        rows = {
            r.job_id: r
            for r in session.query(JobEval).filter(
                JobEval.final.is_(True), JobEval.job_id.in_(jobs)
            )
        }
    a, b = rows[lora["id"]], rows[full["id"]]
    diff = [x - y for x, y in zip(a.item_loss_sums, b.item_loss_sums, strict=True)]
    assert got["se"] == pytest.approx(mean_loss(diff, a.item_tokens).se)
    # Unpaired, the two standard errors would add; pairing removes what the items share.
    assert a.loss_se is not None and b.loss_se is not None
    assert got["se"] < (a.loss_se**2 + b.loss_se**2) ** 0.5

    _refusals(app_client, keys, job_body, lora["id"], full["id"])


def full_loss(jobs: dict[str, dict[str, Any]], full: dict[str, Any]) -> float:
    return float(jobs[full["id"]]["eval_loss"])


def _refusals(
    client: Any, keys: dict[str, str], job_body: Body, lora_id: str, full_id: str
) -> None:
    with session_scope() as session:
        _, other_team = keys_service.create(session, name="b", scope=Scope.READ, team="team-b")
    for url in (f"/v1/jobs/{lora_id}/evals", f"/v1/jobs/{lora_id}/evals/compare?with={full_id}"):
        resp = client.get(url, headers=auth(other_team))
        assert resp.status_code == 404 and resp.headers["content-type"].startswith(
            "application/problem+json"
        )
    # A job with no final evaluation yet: 409, naming it.
    queued = submit(client, keys, job_body("lora", max_steps=2))
    client.post(f"/v1/jobs/{queued['id']}/cancel", headers=auth(keys["submit"]))
    resp = client.get(
        f"/v1/jobs/{lora_id}/evals/compare?with={queued['id']}", headers=auth(keys["read"])
    )
    assert resp.status_code == 409 and queued["id"] in resp.json()["detail"]
    # Another eval set (another dataset, seq_len or eval_fraction): 422 naming `with`.
    with session_scope() as session:
        session.execute(
            update(JobEval).where(JobEval.job_id == full_id).values(eval_set_id="es_other")
        )
    resp = client.get(
        f"/v1/jobs/{lora_id}/evals/compare?with={full_id}", headers=auth(keys["read"])
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["loc"] == ["with"]
    resp = client.get(f"/v1/jobs/{lora_id}/evals/compare?with=job_nope", headers=auth(keys["read"]))
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["with"]
