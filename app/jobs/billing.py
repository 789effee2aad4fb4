"""Every attempt of a job is billed: a row per attempt, the job's cost the sum of them.

A worker that dies mid-job held its GPUs from the attempt's start to its last heartbeat; a cloud
provider bills that time whether or not the attempt finished. An attempt that ends normally is
billed what its metering measured; one that was lost, the time it was seen alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.kit.instants import as_utc
from app.models import Job, JobAttempt

HOUR_S = 3600.0
LOST = "lost"
RUNNING = "running"


def held_gpu_hours(*, started_at: datetime, until: datetime, num_gpus: int) -> float:
    """GPU-hours held from `started_at` to `until` on `num_gpus` devices (either instant may be
    naive UTC, as SQLite hands stored ones back)."""
    held_s = (as_utc(until) - as_utc(started_at)).total_seconds()
    return max(0.0, held_s) / HOUR_S * num_gpus


def start(session: Session, *, job: Job, worker: str, now: datetime) -> None:
    """Record that attempt `job.attempts` started on `worker` now."""
    session.add(
        JobAttempt(
            job_id=job.id,
            attempt=job.attempts,
            worker=worker,
            started_at=now,
            last_seen_at=now,
            outcome=RUNNING,
        )
    )


def close(
    session: Session,
    *,
    job: Job,
    attempt: int,
    outcome: str,
    until: datetime,
    gpu_hours: float | None = None,
    cost_usd: float | None = None,
) -> None:
    """End a running attempt; unmetered figures are the time held at the job's price."""
    row = session.get(JobAttempt, (job.id, attempt))
    if row is None or row.outcome != RUNNING:
        return
    held = held_gpu_hours(started_at=row.started_at, until=until, num_gpus=job.num_gpus)
    row.outcome = outcome
    row.last_seen_at = until
    row.gpu_hours = held if gpu_hours is None else gpu_hours
    row.cost_usd = row.gpu_hours * job.price_per_gpu_hour if cost_usd is None else cost_usd


def total(session: Session, *, job: Job) -> None:
    """Set the job's actual GPU-hours and cost to the sums over its ended attempts."""
    session.flush()
    rows = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)).all()
    ended = [r for r in rows if r.outcome != RUNNING and r.cost_usd is not None]
    if ended:
        job.act_cost_usd = sum(r.cost_usd or 0.0 for r in ended)
        job.act_gpu_hours = sum(r.gpu_hours or 0.0 for r in ended)


def of_jobs(session: Session, job_ids: Sequence[str]) -> dict[str, list[JobAttempt]]:
    """The attempts of several jobs in one query, in order."""
    out: dict[str, list[JobAttempt]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        stmt = (
            select(JobAttempt)
            .where(JobAttempt.job_id.in_(list(job_ids)))
            .order_by(JobAttempt.job_id, JobAttempt.attempt)
        )
        for row in session.scalars(stmt):
            out[row.job_id].append(row)
    return out
