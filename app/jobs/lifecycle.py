"""The one place a job's state changes: claim, lose an attempt, finish, cancel, re-send, end.

```
queued ──claim──▶ running ──finish──▶ succeeded | failed | budget_exceeded | cancelled
  ▲  │               │ cancel                 ▲
  │  │ cancel        ▼                        │ finish, or its worker lost
  │  ▼          cancel_requested ─────────────┘
  │ cancelled        │
  └─ lose_attempt ◀──┘ (running or cancel_requested, worker gone, attempts left)
```

The API (submit, cancel, the sweep on GET), recovery (the workers' sweeper) and the worker
(claim, finish) all change a job through these functions, on a row the caller has locked, in the
caller's transaction (they flush, never commit). Every way a job reaches a final state goes
through `end`, which runs the job-ended hooks (`on_job_end`): what must happen when a job ends
(budgets, webhooks, rollups, studies) is registered there, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import ColumnElement, delete
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.jobs import billing, ended, metered
from app.jobs.provenance import Provenance
from app.kit import outbox
from app.models import Job, JobEvent, JobSeat, JobStatus
from app.models.base import utcnow

# A job runs at most twice: the first attempt and one retry after its worker was lost. A second
# loss is more likely the job's own fault (it kills its host, e.g. out of host memory) than bad
# luck, so it fails instead of taking down a third worker.
MAX_ATTEMPTS = 2
ACTIVE = (JobStatus.RUNNING, JobStatus.CANCEL_REQUESTED)

JobEndHook = Callable[[Session, Job], None]
# Called by `end` with the ended job, in the transaction that ends it, in registration order.
# A hook writes its rows in that session (rolled back with it) and sends anything that leaves
# the process after the commit (`outbox.send_after_commit`). It must not commit.
# Listed here, not registered on import, so no process that ends a job can miss one.
END_HOOKS: list[JobEndHook] = [ended.announce_and_check_budgets]


def on_job_end(hook: JobEndHook) -> JobEndHook:
    """Register `hook` to run whenever a job reaches a final state (usable as a decorator)."""
    END_HOOKS.append(hook)
    return hook


def add_event(session: Session, *, job_id: str, kind: str, message: str) -> None:
    """Record an event of a job (flushed with the caller's transaction)."""
    session.add(JobEvent(job_id=job_id, created_at=utcnow(), kind=kind, message=message))


def owned(job_id: str, attempt: int) -> ColumnElement[bool]:
    """Rows of job `job_id` still run by `attempt` (nobody took it over, it has not ended)."""
    return (Job.id == job_id) & (Job.attempts == attempt) & Job.status.in_(ACTIVE)


def claim(
    session: Session, job: Job, *, worker: str, provenance: Provenance, now: datetime
) -> None:
    """Start the job's next attempt on `worker`, billed as `provenance` says."""
    job.status = JobStatus.RUNNING
    job.attempts += 1
    job.worker = worker
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    job.status_detail = f"running on {worker} (attempt {job.attempts})"
    job.cost_source = provenance.cost_source
    job.billing_provider = provenance.billing_provider
    job.internal_usd_per_gpu_hour = provenance.internal_usd_per_gpu_hour
    job.region = provenance.region
    job.sku = provenance.sku
    job.list_price_reference = provenance.list_price_reference
    billing.start(session, job=job, worker=worker, now=now)
    add_event(session, job_id=job.id, kind="status", message=job.status_detail)


def lose_attempt(session: Session, job: Job, *, reason: str, requeue: bool) -> bool:
    """The running attempt's worker is gone (`reason` says how); True if the job may run again.

    The lost attempt is billed the time its worker was seen alive. A job with a cancel pending
    ends cancelled; one without attempts left ends failed. Otherwise it may run again: re-queued
    and sent after the commit when `requeue`, else left to the caller, who claims it at once.
    """
    free_seats(session, job)
    billing.close(
        session,
        job=job,
        attempt=job.attempts,
        outcome=billing.LOST,
        until=job.heartbeat_at or job.updated_at,
    )
    billing.total(session, job=job)
    if job.status == JobStatus.CANCEL_REQUESTED:
        end(session, job, JobStatus.CANCELLED, detail=f"cancelled; {reason}")
        return False
    if job.attempts >= MAX_ATTEMPTS:
        job.error = f"{reason}; gave up after {job.attempts} attempts"
        end(session, job, JobStatus.FAILED, detail=None)
        return False
    if requeue:
        job.status = JobStatus.QUEUED
        job.status_detail = (
            f"{reason}; re-queued on {job.queue} for attempt {job.attempts + 1} of {MAX_ATTEMPTS}"
        )
        job.worker = None
        job.heartbeat_at = None
        add_event(session, job_id=job.id, kind="status", message=job.status_detail)
        outbox.send_after_commit(session, outbox.RunJobMessage(job.id, job.queue, copies=job.nodes))
    return True


def finish(
    session: Session,
    job: Job,
    *,
    attempt: int,
    status: JobStatus,
    detail: str | None,
    error: str | None = None,
    result: metered.Metered | None = None,
) -> None:
    """End the job's running `attempt` as `status`, storing what it metered (`result`)."""
    if result is not None:
        metered.record(job, result, full_run=status == JobStatus.SUCCEEDED)
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
    end(session, job, status, detail=detail)


def fail(session: Session, job: Job, *, error: str) -> None:
    """End a job that cannot run at all (its stored spec is broken, no worker can hold it)."""
    job.error = error
    end(session, job, JobStatus.FAILED, detail=None)


def cancel(session: Session, job: Job) -> None:
    """Queued: cancelled at once. Running: cancel_requested (its worker stops it, then ends it).

    A job that already ended is a 409; asking again while a cancel is pending changes nothing.
    """
    if job.status == JobStatus.QUEUED:
        end(
            session,
            job,
            JobStatus.CANCELLED,
            detail="cancelled before it started",
            message="cancelled while queued",
        )
    elif job.status == JobStatus.RUNNING:
        job.status = JobStatus.CANCEL_REQUESTED
        job.cancel_requested_at = utcnow()
        job.status_detail = "cancel requested; the worker is stopping the training process"
        add_event(session, job_id=job.id, kind="status", message="cancel requested")
    elif job.status != JobStatus.CANCEL_REQUESTED:
        raise Conflict(f"job {job.id} already ended: {job.status}")
    session.flush()


def resend(session: Session, job: Job, *, message: str) -> None:
    """Send a queued job's message again after the commit (its first may be lost); say why."""
    job.updated_at = utcnow()
    add_event(session, job_id=job.id, kind="status", message=message)
    outbox.send_after_commit(session, outbox.RunJobMessage(job.id, job.queue, copies=job.nodes))


def end(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    detail: str | None,
    message: str | None = None,
) -> None:
    """Put the job in final state `status` and run the job-ended hooks: every ending is here.

    The status event says `message`, else `detail`, else the error of a failed job.
    """
    assert status.is_final, f"{status} is not a final state"
    free_seats(session, job)
    job.status = status
    job.finished_at = utcnow()
    job.status_detail = detail
    text = message or detail or (f"failed: {job.error}" if job.error else str(status))
    add_event(session, job_id=job.id, kind="status", message=text)
    for hook in END_HOOKS:
        hook(session, job)


def free_seats(session: Session, job: Job) -> None:
    """End the gang of a job across nodes: its seats go, and a node still running sees that
    and stops its ranks (app/jobs/gang.py)."""
    if job.nodes > 1:
        session.execute(delete(JobSeat).where(JobSeat.job_id == job.id))


def _stamp(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "?"
