"""Helpers for the budget tests: an estimate for a GPU no test worker serves, seeded jobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Job, JobAttempt, JobStatus
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME, TRAINING
from tests.reports.factory import make_job

# No test starts a worker for this kind: jobs submitted here stay queued and cost nothing.
IDLE_GPU = {"gpu": "RTX-A6000", "provider": "runpod"}


def estimate(client: Any, key: str, dataset_id: str) -> tuple[str, float]:
    """An estimate of the tiny model on IDLE_GPU for `dataset_id`: (its id, LoRA's cost)."""
    body = {
        "model": {"path": TINY_NAME},
        "dataset": {"dataset_id": dataset_id},
        "training": dict(TRAINING),
        "hardware": IDLE_GPU,
    }
    resp = client.post("/v1/estimates", json=body, headers=auth(key))
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    cost = doc["results"]["lora"]["cost_usd"]
    assert cost > 0
    return str(doc["id"]), float(cost)


def job_body(estimate_id: str, project: str, **over: Any) -> dict[str, Any]:
    """A LoRA job of the estimate, tagged project=`project`."""
    return {"estimate_id": estimate_id, "method": "lora", "tags": {"project": project}, **over}


def budget_body(project: str, amount: float, **over: Any) -> dict[str, Any]:
    """A monthly budget of team ml's jobs tagged project=`project`."""
    return {
        "name": f"budget {project}",
        "amount_usd": amount,
        "tag_key": "project",
        "tag_value": project,
        "team": "ml",
        **over,
    }


def active_job(
    session: Session,
    *,
    status: JobStatus,
    est_cost: float,
    basis: str,
    tags: dict[str, str],
    max_cost: float | None = None,
    price: float = 2.0,
    num_gpus: int = 1,
    attempts: Sequence[tuple[datetime, datetime, str, float | None]] = (),
    team: str = "ml",
) -> Job:
    """A queued or running job with its estimate and attempts (start, last seen, outcome, $)."""
    job = make_job(session, tags=tags, team=team, num_gpus=num_gpus, price=price)
    job.status = status
    job.finished_at = None
    job.act_cost_usd = job.act_gpu_hours = job.act_wall_s = None
    job.est_cost_usd = est_cost
    job.max_cost_usd = max_cost
    job.estimate_snapshot = {**job.estimate_snapshot, "basis": basis, "cost_usd": est_cost}
    job.attempts = len(attempts)
    for n, (start, seen, outcome, cost) in enumerate(attempts, start=1):
        session.add(
            JobAttempt(
                job_id=job.id,
                attempt=n,
                worker="seeded",
                started_at=start,
                last_seen_at=seen,
                outcome=outcome,
                cost_usd=cost,
            )
        )
    session.flush()
    return job


def unique(prefix: str) -> str:
    """A tag value no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
