"""The job row from the worker's side: claim it, beat, record progress, finish it.

Every write after the claim is conditional on the attempt that claimed the job still owning it
(same `attempts`, still running or cancel-requested): if a sweeper gave the job to another worker
meanwhile (this one was cut off from the database too long), this worker's writes change nothing
and it stops its child.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.catalog.service import effective_catalog
from app.config import Settings, get_settings
from app.db import session_scope
from app.jobs import billing, provenance
from app.jobs.recovery import ACTIVE, MAX_ATTEMPTS, add_event
from app.jobs.spec import JobSpec
from app.models import Dataset, Job, JobAttempt, JobEvent, JobStatus
from app.models.base import utcnow


@dataclass(frozen=True)
class Claim:
    """A job this worker now runs: the attempt number and what it needs to start."""

    job_id: str
    attempt: int
    spec: JobSpec
    dataset_url: str | None
    started_at_epoch: float
    billed_usd: float = 0.0  # what earlier attempts of the job already cost


@dataclass(frozen=True)
class Skip:
    """Why this delivery of the task does nothing (another delivery or worker has the job)."""

    reason: str


def _owned(job_id: str, attempt: int) -> Any:
    return (Job.id == job_id) & (Job.attempts == attempt) & Job.status.in_(ACTIVE)


def claim(job_id: str, *, hostname: str) -> Claim | Skip:
    """Mark the job running on `hostname` if nobody else runs it; idempotent per delivery.

    Queued → claimed. Running with a fresh heartbeat on another worker → skipped. Running on this
    worker (the process that ran it died: while it lives, its job lock in worker/devices.py keeps
    other deliveries from getting here) or with a stale heartbeat → claimed again if attempts
    remain, else failed. Final → skipped.
    """
    settings = get_settings()
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            return Skip(f"job {job_id} does not exist (deleted, or its submit was undone)")
        if JobStatus(job.status).is_final:
            return Skip(f"job {job_id} already ended: {job.status}")
        now = utcnow()
        if job.status in ACTIVE:
            fresh = job.heartbeat_at is not None and job.heartbeat_at >= now - timedelta(
                seconds=settings.heartbeat_stale_s
            )
            if fresh and job.worker != hostname:
                return Skip(f"job {job_id} is running on {job.worker}")
            # The previous attempt's worker died: bill the time it was seen alive.
            lost_at = job.heartbeat_at or now
            billing.close(
                session, job=job, attempt=job.attempts, outcome=billing.LOST, until=lost_at
            )
            billing.total(session, job=job)
            if job.status == JobStatus.CANCEL_REQUESTED:
                _end(session, job, JobStatus.CANCELLED, detail="cancelled; its worker was lost")
                return Skip(f"job {job_id} was being cancelled when its worker was lost")
            if job.attempts >= MAX_ATTEMPTS:
                job.status, job.finished_at = JobStatus.FAILED, now
                job.error = (
                    f"worker {job.worker} was lost during attempt {job.attempts}; "
                    f"gave up after {job.attempts} attempts"
                )
                add_event(session, job_id=job.id, kind="status", message=job.error)
                return Skip(job.error)
        try:
            spec = JobSpec.model_validate(job.spec)  # stored by the API; validated again here
        except ValidationError as exc:
            job.error = f"the stored job spec is not valid: {exc}"
            _end(session, job, JobStatus.FAILED, detail=None)
            return Skip(job.error)
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.worker = hostname
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.status_detail = f"running on {hostname} (attempt {job.attempts})"
        _stamp_provenance(session, job, settings)
        billing.start(session, job=job, worker=hostname, now=now)
        add_event(session, job_id=job.id, kind="status", message=job.status_detail)
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        return Claim(
            job_id=job.id,
            attempt=job.attempts,
            spec=spec,
            dataset_url=dataset.storage_path if dataset else None,
            started_at_epoch=now.timestamp(),
            billed_usd=job.act_cost_usd or 0.0,
        )


def _stamp_provenance(session: Session, job: Job, settings: Settings) -> None:
    """Record who pays for this attempt's device time: this worker's configuration decides."""
    decided = provenance.decide(
        settings=settings,
        catalog=effective_catalog(session),
        gpu=job.gpu,
        provider=job.provider,
        pricing=job.pricing,
    )
    for name, value in decided.columns().items():
        setattr(job, name, value)


def beat(job_id: str, *, attempt: int) -> JobStatus | None:
    """Refresh the heartbeat; returns the status (None when this attempt no longer owns it)."""
    with session_scope() as session:
        now = utcnow()
        session.execute(update(Job).where(_owned(job_id, attempt)).values(heartbeat_at=now))
        session.execute(
            update(JobAttempt)
            .where(
                JobAttempt.job_id == job_id,
                JobAttempt.attempt == attempt,
                JobAttempt.outcome == billing.RUNNING,
            )
            .values(last_seen_at=now)
        )
        status = session.scalar(select(Job.status).where(Job.id == job_id, Job.attempts == attempt))
    if status is None or status not in ACTIVE:
        return None
    return JobStatus(status)


def add_progress(job_id: str, *, attempt: int, events: list[dict[str, Any]]) -> None:
    """Store progress events (each a dict of JobEvent fields) if this attempt still owns the job."""
    if not events:
        return
    with session_scope() as session:
        if session.scalar(select(Job.id).where(_owned(job_id, attempt))) is None:
            return
        now = utcnow()
        session.add_all(
            JobEvent(job_id=job_id, created_at=now, kind="progress", **e) for e in events
        )


def _end(session: Session, job: Job, status: JobStatus, *, detail: str | None) -> None:
    job.status = status
    job.finished_at = utcnow()
    job.status_detail = detail
    message = detail or (f"failed: {job.error}" if job.error else str(status))
    add_event(session, job_id=job.id, kind="status", message=message)


def finish(
    job_id: str,
    *,
    attempt: int,
    status: JobStatus,
    detail: str | None,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """End the job as `status` with the given column values; False if another attempt owns it."""
    with session_scope() as session:
        job = session.scalar(select(Job).where(_owned(job_id, attempt)).with_for_update())
        if job is None:
            return False
        for name, value in (values or {}).items():
            setattr(job, name, value)
        job.error = error
        job.heartbeat_at = utcnow()
        if job.status == JobStatus.CANCEL_REQUESTED and status != JobStatus.CANCELLED:
            # The cancel came too late: the run had already ended. Say so; it is billed.
            add_event(
                session,
                job_id=job.id,
                kind="status",
                message=f"cancel requested at {_stamp(job.cancel_requested_at)} lost the race: "
                f"the run had already ended {status}",
            )
            detail = f"{detail or status}; the cancel request came after the run ended"
        # This attempt is billed what it metered (or the time it held, if nothing was metered);
        # the job's cost is the sum over all its attempts.
        billing.close(
            session,
            job=job,
            attempt=attempt,
            outcome=str(status),
            until=job.heartbeat_at,
            gpu_hours=job.act_gpu_hours,
            cost_usd=job.act_cost_usd,
        )
        billing.total(session, job=job)
        _end(session, job, status, detail=detail)
        return True


def fail_unclaimed(job_id: str, *, reason: str) -> None:
    """Fail a queued job that cannot even be claimed (e.g. its row is unusable)."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is not None and not JobStatus(job.status).is_final:
            job.error = reason
            _end(session, job, JobStatus.FAILED, detail=None)


def devices_needed(job_id: str) -> int | None:
    """How many devices the job needs; None when it is gone or has ended (nothing to run)."""
    with session_scope() as session:
        row = session.execute(
            select(Job.num_gpus, Job.status).where(Job.id == job_id)
        ).one_or_none()
    if row is None or JobStatus(row.status).is_final:
        return None
    return int(row.num_gpus)


def note_waiting(job_id: str, *, detail: str) -> None:
    """Say why a queued job has not started yet (say, its worker's devices are all held)."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is not None and job.status == JobStatus.QUEUED and job.status_detail != detail:
            job.status_detail = detail
            add_event(session, job_id=job_id, kind="status", message=detail)


def add_status_event(job_id: str, *, attempt: int, message: str, kind: str = "status") -> None:
    """A status or phase event (e.g. the child's pid) while this attempt owns the job."""
    with session_scope() as session:
        if session.scalar(select(Job.id).where(_owned(job_id, attempt))) is not None:
            add_event(session, job_id=job_id, kind=kind, message=message[:2000])


def estimates(job_id: str) -> dict[str, float | int | None]:
    """The job's estimated quantities, keyed as the errors compare them with the actuals."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return {}
        return {
            "cost_usd": job.est_cost_usd,
            "gpu_hours": job.est_gpu_hours,
            "peak_bytes": job.est_peak_bytes,
            "artifact_bytes": job.est_artifact_bytes,
        }


def _stamp(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "?"
