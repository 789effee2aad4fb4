"""Jobs whose worker died: found by a stale heartbeat, retried once, then failed with the reason.

Shared by the API (a cheap sweep of one job on GET) and the workers (every worker sweeps all jobs
from a background thread). Each sweep locks the rows it changes (`FOR UPDATE SKIP LOCKED` on
PostgreSQL), so two sweepers never both re-queue a job. A re-queued job's message is sent after the
caller's commit (app/kit/outbox.py): a task must never reach a worker before its row says `queued`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.jobs import lifecycle
from app.models import Job, JobStatus, WorkerNode
from app.models.base import utcnow

RESEND_BATCH = 100  # queued jobs re-sent per sweep at most


def sweep_stale(session: Session, *, stale_s: float, job_id: str | None = None) -> list[str]:
    """Recover running jobs with a heartbeat older than `stale_s`; returns the re-queued ids.

    Each lost attempt goes through `lifecycle.lose_attempt`: re-queued while the job has
    attempts left, else ended (cancelled when a cancel was pending, failed otherwise).
    """
    cutoff = utcnow() - timedelta(seconds=stale_s)
    stmt = select(Job).where(
        Job.status.in_(lifecycle.ACTIVE),
        or_(Job.heartbeat_at < cutoff, and_(Job.heartbeat_at.is_(None), Job.updated_at < cutoff)),
    )
    if job_id is not None:
        stmt = stmt.where(Job.id == job_id)
    stmt = stmt.with_for_update(skip_locked=True)
    resend: list[str] = []
    for job in session.scalars(stmt).all():
        reason = (
            f"worker {job.worker or '?'} stopped sending heartbeats "
            f"(last at {_stamp(job.heartbeat_at)}; stale after {stale_s:g} s)"
        )
        if lifecycle.lose_attempt(session, job, reason=reason, requeue=True):
            resend.append(job.id)
    session.flush()
    return resend


def resend_queued(session: Session, *, older_than_s: float, stale_s: float) -> list[str]:
    """Queued jobs untouched for `older_than_s` that a live worker can hold: re-send them.

    Their broker message may be lost (a broker restarted without persistence, say). Sending
    again is safe: the task claims the row atomically and a second delivery is skipped. Each
    re-sent job is touched, so it is re-sent at most once per `older_than_s`. Returns their ids;
    the messages go after the caller's commit.
    """
    now = utcnow()
    # A live worker of the job's GPU kind with enough devices: only such a worker consumes
    # the job's queue (`gpu.<kind>.x<n>`), so re-sending is pointless without one.
    can_hold = (
        select(WorkerNode.hostname)
        .where(
            WorkerNode.gpu == Job.gpu,
            WorkerNode.device_count * Job.nodes >= Job.num_gpus,
            WorkerNode.last_seen_at >= now - timedelta(seconds=stale_s),
        )
        .exists()
    )
    stmt = (
        select(Job)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.updated_at < now - timedelta(seconds=older_than_s),
            can_hold,
        )
        .order_by(Job.updated_at)
        .limit(RESEND_BATCH)
        .with_for_update(skip_locked=True)
    )
    resend: list[str] = []
    for job in session.scalars(stmt).all():
        lifecycle.resend(
            session,
            job,
            message=f"still queued after {older_than_s:g} s with a live worker for {job.queue}; "
            "its message was sent again (a duplicate delivery is skipped)",
        )
        resend.append(job.id)
    session.flush()
    return resend


def _stamp(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "never"


def live_worker_count(session: Session, *, gpu: str, stale_s: float, num_gpus: int = 1) -> int:
    """Workers of this GPU kind with at least `num_gpus` devices whose heartbeat is fresh."""
    cutoff = utcnow() - timedelta(seconds=stale_s)
    rows = session.scalars(
        select(WorkerNode.hostname).where(
            WorkerNode.gpu == gpu,
            WorkerNode.device_count >= num_gpus,
            WorkerNode.last_seen_at >= cutoff,
        )
    ).all()
    return len(rows)


def no_worker_detail(queue: str, *, nodes: int = 1, live: int = 0) -> str:
    """The status detail of a queued job that too few live workers can take."""
    if nodes == 1:
        return f"no live worker for {queue}; the job waits in the queue"
    return (
        f"the job needs {nodes} live workers for {queue} (one per node) and {live} are live; "
        "it waits in the queue"
    )
