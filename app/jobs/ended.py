"""The FinOps side of a job's end, registered as a job-ended hook (app/jobs/lifecycle.py).

Run by `lifecycle.end` in the transaction that ends the job, after its status, finish time and
cost are set:

- its webhook event (`job.succeeded`, `job.failed`, `job.cancelled`, `job.budget_exceeded`) and,
  for a succeeded full run, `calibration.updated` (the run joins its (GPU, method) samples);
- the thresholds of the budgets it counts against, re-checked with its real cost.

Both only write rows in the caller's transaction; the deliveries are sent after it commits.
The lifecycle lists it among its hooks itself, so every process that ends a job runs it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.budgets import alerts
from app.models import Job, JobStatus, JobTag
from app.models.base import utcnow
from app.webhooks.events import JOB_EVENTS, EventType, emit, job_data


def announce_and_check_budgets(session: Session, job: Job) -> None:
    """Announce the ended job and re-check its budgets."""
    status = JobStatus(job.status)
    tags = {t.key: t.value for t in session.scalars(select(JobTag).where(JobTag.job_id == job.id))}
    owner = {"team": job.team, "key_id": job.created_by_key_id}
    emit(session, **owner, type_=JOB_EVENTS[status], data=job_data(job, tags))
    full_run = (job.errors or {}).get("complete_run") is not False
    if status == JobStatus.SUCCEEDED and full_run:
        calibration = {"gpu": job.gpu, "method": job.method, "job_id": job.id}
        emit(
            session, **owner, type_=EventType.CALIBRATION_UPDATED, data={"calibration": calibration}
        )
    alerts.after_job_end(session, job=job, now=utcnow())
