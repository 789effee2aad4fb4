"""GET /v1/reports/benefit: $ per unit of eval-loss improvement by method, from the jobs' base
and final evaluations, within the caller's tenant and the report filters."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import JobEval, JobStatus
from app.models.base import utcnow
from tests.conftest import auth
from tests.reports.factory import make_job, unique


def _eval(session: Session, job_id: str, *, step: int, loss: float, attempt: int = 1) -> None:
    session.add(
        JobEval(
            job_id=job_id,
            attempt=attempt,
            created_at=utcnow(),
            step=step,
            total_steps=10,
            tokens=step,
            elapsed_s=0.0,
            accrued_cost_usd=0.0,
            final=step > 0,
            eval_set_id="es_2_x",
            loss=loss,
            loss_se=None,
            token_accuracy=None,
            items=2,
            loss_tokens=10,
            item_loss_sums=[loss * 5, loss * 5],
            item_tokens=[5, 5],
        )
    )


def test_dollars_per_unit_of_eval_loss_removed_by_method(
    app_client: Any, keys: dict[str, str]
) -> None:
    suite = unique("benefit")
    # (method, cost, base loss, final loss, team): full removes more loss for more dollars; a
    # LoRA job whose loss rose has no ratio; another team's job and a job without a base
    # evaluation are not counted.
    jobs = [
        ("lora", 4.0, 2.0, 1.5, "ml"),
        ("lora", 6.0, 2.0, 1.0, "ml"),
        ("lora", 1.0, 2.0, 2.1, "ml"),
        ("full", 40.0, 2.0, 0.8, "ml"),
        ("full", 99.0, 2.0, 0.1, "other"),
    ]
    with session_scope() as session:
        for method, cost, base, final, team in jobs:
            job = make_job(
                session,
                method=method,
                act_cost=cost,
                act_hours=1.0,
                team=team,
                tags={"suite": suite},
                status=JobStatus.SUCCEEDED,
            )
            _eval(session, job.id, step=0, loss=base)
            _eval(session, job.id, step=10, loss=final)
        lone = make_job(
            session,
            method="full",
            act_cost=5.0,
            act_hours=1.0,
            team="ml",
            tags={"suite": suite},
            status=JobStatus.SUCCEEDED,
        )
        _eval(session, lone.id, step=10, loss=0.5)  # no base evaluation: nothing to improve on

    resp = app_client.get(
        "/v1/reports/benefit", params={"tag.suite": suite}, headers=auth(keys["read"])
    )
    assert resp.status_code == 200, resp.text
    rows = {r["method"]: r for r in resp.json()["rows"]}
    assert set(rows) == {"full", "lora"}
    lora, full = rows["lora"], rows["full"]
    assert lora["jobs"] == 3 and lora["cost_usd"] == pytest.approx(11.0)
    assert lora["eval_loss_improvement"] == pytest.approx(0.5 + 1.0 - 0.1)
    assert lora["usd_per_eval_loss_unit"] == pytest.approx(11.0 / 1.4)
    assert lora["median_usd_per_eval_loss_unit"] == pytest.approx(statistics.median([8.0, 6.0]))
    assert full["jobs"] == 1 and full["usd_per_eval_loss_unit"] == pytest.approx(40.0 / 1.2)
    assert resp.json()["filters"]["tag.suite"] == [suite]
