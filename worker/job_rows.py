"""The job row from the worker's side: claim it, beat, record progress, finish it.

Each opens its own short transaction; the state changes themselves are app/jobs/lifecycle.py's.
Every write after the claim is conditional on the attempt that claimed the job still owning it
(same `attempts`, still running or cancel-requested): if a sweeper gave the job to another worker
meanwhile (this one was cut off from the database too long), this worker's writes change nothing
and it stops its child.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.catalog.service import effective_catalog
from app.config import Settings, get_settings
from app.db import session_scope
from app.evals.points import EvalPoint
from app.jobs import billing, lifecycle, provenance
from app.jobs.lifecycle import ACTIVE, add_event, owned
from app.jobs.metered import Metered
from app.jobs.spec import JobSpec
from app.models import Dataset, Job, JobAttempt, JobEval, JobEvent, JobStatus
from app.models.base import utcnow
from worker.training.messages import ProgressEvent

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long an attempt's last write (its end, its actuals) waits out an unreachable database before
# giving up: a PostgreSQL restart or a managed failover takes seconds to about a minute; the run's
# outcome exists only in this process until it is written.
FINAL_WRITE_RETRY_S = 300.0
FINAL_WRITE_PAUSE_S = 2.0  # between tries


@dataclass(frozen=True)
class Claim:
    """A job this worker now runs: the attempt number and what it needs to start."""

    job_id: str
    attempt: int
    spec: JobSpec
    dataset_url: str | None
    started_at_epoch: float
    dataset_columns: dict[str, str] | None = None  # the upload's column mapping, if it had one
    billed_usd: float = 0.0  # what earlier attempts of the job already cost


@dataclass(frozen=True)
class Skip:
    """Why this delivery of the task does nothing (another delivery or worker has the job)."""

    reason: str


BeforeClaim = Callable[[Session, Job], str | None]


def claim(job_id: str, *, hostname: str, before: BeforeClaim | None = None) -> Claim | Skip:
    """Mark the job running on `hostname` if nobody else runs it; idempotent per delivery.

    Queued → claimed. Running with a fresh heartbeat on another worker → skipped. Running on this
    worker (the process that ran it died: while it lives, its job lock in worker/devices.py keeps
    other deliveries from getting here) or with a stale heartbeat → claimed again if attempts
    remain, else failed. Final → skipped. `before(session, job)`, under the job's lock just
    before the claim, may refuse it with a reason (a gang that is not complete: app/jobs/gang.py).
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
            # The previous attempt's worker died (this one, restarted, or another).
            reason = f"worker {job.worker} was lost during attempt {job.attempts}"
            if not lifecycle.lose_attempt(session, job, reason=reason, requeue=False):
                return Skip(f"job {job_id}: {job.error or job.status_detail}")
        try:
            spec = JobSpec.model_validate(job.spec)  # stored by the API; validated again here
        except ValidationError as exc:
            lifecycle.fail(session, job, error=f"the stored job spec is not valid: {exc}")
            return Skip(f"job {job_id}: {job.error}")
        if before is not None:
            refused = before(session, job)
            if refused is not None:
                return Skip(refused)
        lifecycle.claim(
            session, job, worker=hostname, provenance=_provenance(session, job, settings), now=now
        )
        return _claim_of(session, job, spec, started_at=now)


def _claim_of(session: Session, job: Job, spec: JobSpec, *, started_at: datetime) -> Claim:
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    return Claim(
        job_id=job.id,
        attempt=job.attempts,
        spec=spec,
        dataset_url=dataset.storage_path if dataset else None,
        dataset_columns=dataset.stats.get("columns") if dataset else None,
        started_at_epoch=started_at.timestamp(),
        billed_usd=job.act_cost_usd or 0.0,
    )


def running_claim(job_id: str, *, attempt: int) -> Claim | Skip:
    """What a node other than 0 of a job across nodes runs: the attempt node 0 claimed."""
    with session_scope() as session:
        job = session.scalar(select(Job).where(owned(job_id, attempt)))
        if job is None:
            return Skip(f"job {job_id} no longer runs attempt {attempt}")
        started = session.scalar(
            select(JobAttempt.started_at).where(
                JobAttempt.job_id == job_id, JobAttempt.attempt == attempt
            )
        )
        spec = JobSpec.model_validate(job.spec)
        return _claim_of(session, job, spec, started_at=started or job.started_at or utcnow())


def lose(job_id: str, *, attempt: int, reason: str) -> bool:
    """This attempt lost a node (`reason` names it): re-queue the job or end it, as a lost
    worker's attempt is; False if another attempt owns the job."""
    with session_scope() as session:
        job = session.scalar(select(Job).where(owned(job_id, attempt)).with_for_update())
        if job is None:
            return False
        lifecycle.lose_attempt(session, job, reason=reason, requeue=True)
        return True


def _provenance(session: Session, job: Job, settings: Settings) -> provenance.Provenance:
    """Who pays for this attempt's device time: this worker's configuration decides."""
    return provenance.decide(
        settings=settings,
        catalog=effective_catalog(session),
        gpu=job.gpu,
        provider=job.provider,
        pricing=job.pricing,
    )


def beat(job_id: str, *, attempt: int) -> JobStatus | None:
    """Refresh the heartbeat; returns the status (None when this attempt no longer owns it)."""
    with session_scope() as session:
        now = utcnow()
        session.execute(update(Job).where(owned(job_id, attempt)).values(heartbeat_at=now))
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


def _progress_row(job_id: str, event: ProgressEvent, now: datetime) -> JobEvent:
    return JobEvent(
        job_id=job_id,
        created_at=now,
        kind="progress",
        step=event.step,
        total_steps=event.total_steps,
        loss=event.loss,
        tokens=event.tokens,
        tokens_per_s=event.tokens_per_s,
        accrued_cost_usd=event.accrued_cost_usd,
    )


def add_progress(job_id: str, *, attempt: int, events: list[ProgressEvent]) -> None:
    """Store progress events as `progress` rows if this attempt still owns the job."""
    if not events:
        return
    with session_scope() as session:
        if session.scalar(select(Job.id).where(owned(job_id, attempt))) is None:
            return
        now = utcnow()
        session.add_all(_progress_row(job_id, e, now) for e in events)


def add_eval(job_id: str, *, attempt: int, point: EvalPoint) -> None:
    """Store one point of the job's eval curve if this attempt still owns the job."""
    with session_scope() as session:
        if session.scalar(select(Job.id).where(owned(job_id, attempt))) is None:
            return
        session.add(
            JobEval(
                job_id=job_id,
                attempt=attempt,
                created_at=utcnow(),
                **point.model_dump(exclude={"type"}),
            )
        )


def finish(
    job_id: str,
    *,
    attempt: int,
    status: JobStatus,
    detail: str | None,
    error: str | None = None,
    result: Metered | None = None,
    last_progress: ProgressEvent | None = None,
) -> bool:
    """End the job as `status`, storing what the attempt metered; False if another owns it.

    `last_progress`, the run's last progress event, is stored with the end when the job's events
    stop short of it (its own write failed: the database was unreachable as the run ended). The
    write is retried while the database is unreachable, up to FINAL_WRITE_RETRY_S.
    """

    def write() -> bool:
        with session_scope() as session:
            job = session.scalar(select(Job).where(owned(job_id, attempt)).with_for_update())
            if job is None:
                return False
            if last_progress is not None:
                stored = session.scalar(
                    select(func.max(JobEvent.step)).where(
                        JobEvent.job_id == job_id, JobEvent.kind == "progress"
                    )
                )
                if stored is None or stored < last_progress.step:
                    session.add(_progress_row(job_id, last_progress, utcnow()))
            lifecycle.finish(
                session,
                job,
                attempt=attempt,
                status=status,
                detail=detail,
                error=error,
                result=result,
            )
            return True

    return until_written(write, what=f"the end of job {job_id}")


def until_written(write: Callable[[], T], *, what: str) -> T:
    """`write()`, tried again while the database is unreachable, up to FINAL_WRITE_RETRY_S."""
    deadline = time.monotonic() + FINAL_WRITE_RETRY_S
    while True:
        try:
            return write()
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            log.warning("writing %s failed: the database is unreachable; trying again", what)
            time.sleep(FINAL_WRITE_PAUSE_S)


def fail_unclaimed(job_id: str, *, reason: str) -> None:
    """Fail a queued job that cannot even be claimed (e.g. its row is unusable)."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is not None and not JobStatus(job.status).is_final:
            lifecycle.fail(session, job, error=reason)


@dataclass(frozen=True)
class Need:
    """What one node of a job takes of its worker: its devices, and how many nodes there are."""

    devices: int
    nodes: int


def devices_needed(job_id: str) -> Need | None:
    """The devices each node of the job needs; None when it is gone or has ended."""
    with session_scope() as session:
        row = session.execute(
            select(Job.num_gpus, Job.nodes, Job.status).where(Job.id == job_id)
        ).one_or_none()
    if row is None or JobStatus(row.status).is_final:
        return None
    return Need(devices=int(row.num_gpus) // int(row.nodes), nodes=int(row.nodes))


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
        if session.scalar(select(Job.id).where(owned(job_id, attempt))) is not None:
            add_event(session, job_id=job_id, kind=kind, message=message[:2000])
