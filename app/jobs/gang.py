"""Gang scheduling of a job across nodes: all of its nodes start together, or none does.

A job of N nodes is sent as N messages to the queue of its per-node size. A worker that takes
one (and holds a node's devices) joins a free seat of the job (`join`); seat 0 is the host. While
the job is queued the seated workers poll (`look`), beating their seats. Once every seat is taken
the host claims the job and publishes the endpoint of torch's rendezvous store (`start`); the
other nodes read it and start their ranks. Every node beats its seat while it trains and marks
how its node ended (`end_node`); each reads the others' seats, so a node whose worker died (its
seat goes stale) or failed is seen, and the others stop their ranks. The host then ends the job
for all (worker/gang.py).

No deadlock: a node leaves its seat, and its message goes back to the queue, after `GATHER_S`
without a full gang, or at once when an older job of its queue is gathering too (`yield_to`),
so of two gangs that each hold part of the workers, the younger one gives way. A seat whose
worker died while gathering is freed by the others (`look`), its message sent again. Every state
change happens under the job row's lock (`FOR UPDATE` on PostgreSQL; SQLite serialises writers),
so two workers never take one seat and a seat never appears on a job that has started. The seats
go when the job ends or its attempt is lost (`lifecycle.free_seats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from app.jobs.lifecycle import add_event
from app.kit import outbox
from app.models import Job, JobSeat, JobStatus, SeatState
from app.models.base import utcnow

# A node waits this long for the rest of its gang, then gives its seat back and sends its
# message again: long enough for the other workers to finish a short job and take theirs.
GATHER_S = 120.0
HOST = 0  # the node whose agent hosts torch's rendezvous store and whose rank 0 meters the job


@dataclass(frozen=True)
class Seat:
    """A worker's place in a job's gang."""

    job_id: str
    node_index: int
    nodes: int
    worker: str

    @property
    def is_host(self) -> bool:
        """Node 0: it claims the job, hosts the rendezvous and reports the job's actuals."""
        return self.node_index == HOST


@dataclass(frozen=True)
class SeatView:
    """One seat as another node sees it."""

    node_index: int
    worker: str
    state: SeatState
    endpoint: str | None
    attempt: int | None
    fresh: bool  # its worker beat within the stale limit
    error: str | None

    def describe(self) -> str:
        """`node 1 (worker w1@host)` for messages."""
        return f"node {self.node_index} ({self.worker})"


@dataclass(frozen=True)
class Gang:
    """The job and its seats at one look."""

    status: JobStatus
    attempts: int
    nodes: int
    seats: list[SeatView]

    def seat(self, node_index: int) -> SeatView | None:
        """The seat of `node_index`, if someone holds it."""
        return next((s for s in self.seats if s.node_index == node_index), None)

    @property
    def complete(self) -> bool:
        """Every seat is taken."""
        return len(self.seats) == self.nodes


def join(session: Session, *, job_id: str, worker: str) -> Seat | str:
    """Take the lowest free seat of a queued job for `worker`; why not, when it cannot."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return f"job {job_id} does not exist"
    if job.status != JobStatus.QUEUED:
        return f"job {job_id} is {job.status}, not gathering its nodes"
    seats = session.scalars(select(JobSeat).where(JobSeat.job_id == job_id)).all()
    now = utcnow()
    mine = next((s for s in seats if s.worker == worker), None)
    if mine is not None:
        # Only a process of this worker that died held it: while one lives, its job lock keeps
        # the others away (worker/devices.py). Take the seat over.
        mine.heartbeat_at = now
        session.flush()
        return Seat(job_id=job_id, node_index=mine.node_index, nodes=job.nodes, worker=worker)
    free = sorted(set(range(job.nodes)) - {s.node_index for s in seats})
    if not free:
        return f"every node of job {job_id} is taken"
    index = free[0]
    session.add(
        JobSeat(
            job_id=job_id,
            node_index=index,
            worker=worker,
            state=SeatState.JOINED,
            joined_at=now,
            heartbeat_at=now,
        )
    )
    job.status_detail = f"gathering nodes: {len(seats) + 1} of {job.nodes} joined"
    add_event(
        session,
        job_id=job_id,
        kind="status",
        message=f"node {index} of {job.nodes}: worker {worker} joined",
    )
    session.flush()
    return Seat(job_id=job_id, node_index=index, nodes=job.nodes, worker=worker)


def look(session: Session, seat: Seat, *, stale_s: float) -> Gang | None:
    """Beat `seat` and see the gang; None once the seat is gone (the job ended, the gang broke).

    A gathering seat whose worker stopped beating is freed here and its message sent again.
    """
    now = utcnow()
    job = session.get(Job, seat.job_id, with_for_update=True)
    if job is None:
        return None
    rows = session.scalars(select(JobSeat).where(JobSeat.job_id == seat.job_id)).all()
    mine = next((r for r in rows if r.node_index == seat.node_index), None)
    if mine is None or mine.worker != seat.worker:
        return None
    mine.heartbeat_at = now
    stale = now - timedelta(seconds=stale_s)
    if job.status == JobStatus.QUEUED:
        for row in [r for r in rows if r is not mine and r.heartbeat_at < stale]:
            session.delete(row)
            rows = [r for r in rows if r is not row]
            add_event(
                session,
                job_id=job.id,
                kind="status",
                message=f"node {row.node_index} ({row.worker}) stopped beating while gathering; "
                "its seat is free again",
            )
            outbox.send_after_commit(session, outbox.RunJobMessage(job.id, job.queue))
    session.flush()
    return Gang(
        status=JobStatus(job.status),
        attempts=job.attempts,
        nodes=job.nodes,
        seats=[_view(r, stale) for r in sorted(rows, key=lambda r: r.node_index)],
    )


def _view(row: JobSeat, stale: datetime) -> SeatView:
    return SeatView(
        node_index=row.node_index,
        worker=row.worker,
        state=SeatState(row.state),
        endpoint=row.endpoint,
        attempt=row.attempt,
        fresh=row.heartbeat_at >= stale,
        error=row.error,
    )


def leave(session: Session, seat: Seat, *, reason: str) -> bool:
    """Give a gathering seat back and send its message again; False if the gang has started
    (or the seat is gone)."""
    job = session.get(Job, seat.job_id, with_for_update=True)
    if job is None or job.status != JobStatus.QUEUED:
        return False
    row = session.get(JobSeat, (seat.job_id, seat.node_index))
    if row is None or row.worker != seat.worker or row.state != SeatState.JOINED:
        return False
    session.delete(row)
    left = session.scalar(
        select(func.count()).select_from(JobSeat).where(JobSeat.job_id == seat.job_id)
    )
    job.status_detail = f"gathering nodes: {(left or 1) - 1} of {job.nodes} joined"
    add_event(
        session,
        job_id=job.id,
        kind="status",
        message=f"node {seat.node_index} ({seat.worker}) left: {reason}",
    )
    outbox.send_after_commit(session, outbox.RunJobMessage(job.id, job.queue))
    session.flush()
    return True


def yield_to(session: Session, seat: Seat) -> str | None:
    """An older job of the same queue that is gathering its nodes too, and lacks some: this
    (younger) gang gives way to it. None when there is none."""
    job = session.get(Job, seat.job_id)
    if job is None:
        return None
    other = aliased(Job)
    seats = (
        select(func.count())
        .select_from(JobSeat)
        .where(JobSeat.job_id == other.id)
        .correlate(other)
        .scalar_subquery()
    )
    older = session.scalar(
        select(other.id)
        .where(
            other.queue == job.queue,
            other.status == JobStatus.QUEUED,
            other.nodes > 1,
            other.created_at < job.created_at,
            seats > 0,
            seats < other.nodes,
        )
        .order_by(other.created_at)
        .limit(1)
    )
    return older


def start(session: Session, job: Job, *, worker: str, endpoint: str) -> str | None:
    """Under the job's lock, before the host claims it: every seat taken, the host's worker is
    `worker`; mark them running the next attempt at `endpoint`. Why not, when it cannot."""
    rows = session.scalars(select(JobSeat).where(JobSeat.job_id == job.id)).all()
    if len(rows) != job.nodes:
        return f"job {job.id} has {len(rows)} of its {job.nodes} nodes"
    host = next((r for r in rows if r.node_index == HOST), None)
    if host is None or host.worker != worker:
        return f"worker {worker} does not hold node 0 of job {job.id}"
    now = utcnow()
    for row in rows:
        row.state = SeatState.RUNNING
        row.attempt = job.attempts + 1
        row.heartbeat_at = now if row is host else row.heartbeat_at
    host.endpoint = endpoint
    session.flush()
    return None


def end_node(session: Session, seat: Seat, *, attempt: int, error: str | None) -> None:
    """Mark how this node's ranks ended (done, or failed with `error`) if its seat remains."""
    row = session.get(JobSeat, (seat.job_id, seat.node_index), with_for_update=True)
    if row is None or row.worker != seat.worker or row.attempt != attempt:
        return
    row.state = SeatState.FAILED if error is not None else SeatState.DONE
    row.error = error[:2000] if error is not None else None
    row.heartbeat_at = utcnow()
    session.flush()


def pass_on(session: Session, *, job_id: str) -> bool:
    """Send a gathering job's message again, for another worker: this one holds a node of it
    already. False when the job is not a gathering job across nodes."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.nodes == 1 or job.status != JobStatus.QUEUED:
        return False
    outbox.send_after_commit(session, outbox.RunJobMessage(job.id, job.queue))
    return True


def workers(session: Session, *, job_id: str) -> list[str]:
    """The workers of the job's seats, by node."""
    return list(
        session.scalars(
            select(JobSeat.worker).where(JobSeat.job_id == job_id).order_by(JobSeat.node_index)
        )
    )
