"""The gang protocol of jobs across nodes on real rows: seats, the host's start, leaving, stale
seats, the older gang first, and the seats going with the attempt (app/jobs/gang.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.jobs import gang, lifecycle
from app.jobs.provenance import Provenance
from app.jobs.spec import JobSpec
from app.kit import outbox
from app.models import CostSource, Job, JobSeat, JobStatus, SeatState
from app.models.base import utcnow
from tests.reports.factory import make_job
from tests.support import ServiceEnv

SELF_HOSTED = Provenance(CostSource.SELF_HOSTED, None, 0.02, None, None, "aws cpu on_demand")
QUEUE = "gpu.A100-80GB.x2"


@pytest.fixture
def session(service_env: ServiceEnv) -> Iterator[Session]:
    """A session on the test database whose changes are rolled back (nothing is sent)."""
    with get_sessionmaker()() as s:
        yield s
        s.rollback()


def _gang_job(session: Session, *, nodes: int = 2, age_s: float = 0.0) -> Job:
    job = make_job(session, status=JobStatus.QUEUED, act_hours=None, act_peak=None, num_gpus=4)
    job.finished_at = job.started_at = None
    job.attempts = 0
    job.nodes = nodes
    job.queue = QUEUE
    job.created_at = utcnow() - timedelta(seconds=age_s)
    session.flush()
    return job


def _seat(session: Session, job: Job, worker: str) -> gang.Seat:
    seat = gang.join(session, job_id=job.id, worker=worker)
    assert isinstance(seat, gang.Seat), seat
    return seat


def _messages(session: Session) -> list[tuple[str, int]]:
    return [
        (m.job_id, m.copies) for m in outbox.pending(session) if isinstance(m, outbox.RunJobMessage)
    ]


def test_workers_take_the_seats_in_order_and_the_host_starts_the_complete_gang(
    session: Session,
) -> None:
    job = _gang_job(session)
    first, second = _seat(session, job, "w1"), _seat(session, job, "w2")
    assert (first.node_index, second.node_index) == (0, 1) and first.is_host
    refused = gang.join(session, job_id=job.id, worker="w3")
    assert refused == f"every node of job {job.id} is taken"
    # The same worker again (a process of it that died held the seat) keeps its seat.
    again = _seat(session, job, "w2")
    assert again.node_index == 1

    view = gang.look(session, second, stale_s=60)
    assert view is not None and view.complete and view.status == JobStatus.QUEUED
    assert gang.start(session, job, worker="w2", endpoint="10.0.0.2:29400") == (
        f"worker w2 does not hold node 0 of job {job.id}"
    )
    assert gang.start(session, job, worker="w1", endpoint="10.0.0.1:29400") is None
    lifecycle.claim(session, job, worker="w1", provenance=SELF_HOSTED, now=utcnow())
    view = gang.look(session, second, stale_s=60)
    assert view is not None and view.status == JobStatus.RUNNING and view.attempts == 1
    host = view.seat(0)
    assert host is not None and host.endpoint == "10.0.0.1:29400"
    assert [(s.state, s.attempt) for s in view.seats] == [(SeatState.RUNNING, 1)] * 2
    # A running gang takes no one else, and its seats cannot be left.
    assert gang.join(session, job_id=job.id, worker="w3") == (
        f"job {job.id} is running, not gathering its nodes"
    )
    assert not gang.leave(session, second, reason="test")


def test_an_incomplete_gang_is_not_started(session: Session) -> None:
    job = _gang_job(session)
    _seat(session, job, "w1")
    assert gang.start(session, job, worker="w1", endpoint="h:1") == (
        f"job {job.id} has 1 of its 2 nodes"
    )


def test_a_node_that_leaves_sends_its_message_again_and_its_seat_is_taken_anew(
    session: Session,
) -> None:
    job = _gang_job(session)
    host, other = _seat(session, job, "w1"), _seat(session, job, "w2")
    assert gang.leave(session, host, reason="waited too long")
    assert _messages(session) == [(job.id, 1)]
    assert gang.look(session, host, stale_s=60) is None  # its seat is gone
    newcomer = _seat(session, job, "w3")
    assert newcomer.node_index == 0  # the lowest free seat: w3 hosts now
    view = gang.look(session, other, stale_s=60)
    assert view is not None and [s.worker for s in view.seats] == ["w3", "w2"]


def test_a_seat_whose_worker_died_while_gathering_is_freed_by_the_others(
    session: Session,
) -> None:
    job = _gang_job(session, nodes=3)
    dead, alive = _seat(session, job, "w1"), _seat(session, job, "w2")
    row = session.get(JobSeat, (job.id, dead.node_index))
    assert row is not None
    row.heartbeat_at = utcnow() - timedelta(seconds=120)
    session.flush()
    view = gang.look(session, alive, stale_s=60)
    assert view is not None and [s.worker for s in view.seats] == ["w2"]
    assert _messages(session) == [(job.id, 1)]  # its message goes back to the queue


def test_a_younger_gang_gives_way_to_an_older_one_gathering_on_its_queue(
    session: Session,
) -> None:
    older = _gang_job(session, age_s=60)
    younger = _gang_job(session)
    mine = _seat(session, younger, "w2")
    assert gang.yield_to(session, mine) is None  # the older one holds no seat: not gathering
    _seat(session, older, "w1")
    assert gang.yield_to(session, mine) == older.id
    _seat(session, older, "w3")
    assert gang.yield_to(session, mine) is None  # complete: it needs nobody
    older_seat = gang.Seat(job_id=older.id, node_index=0, nodes=2, worker="w1")
    assert gang.yield_to(session, older_seat) is None  # nothing older than it


def test_a_lost_attempt_frees_the_seats_and_sends_one_message_per_node(
    session: Session,
) -> None:
    job = _gang_job(session)
    _seat(session, job, "w1")
    _seat(session, job, "w2")
    assert gang.start(session, job, worker="w1", endpoint="h:1") is None
    lifecycle.claim(session, job, worker="w1", provenance=SELF_HOSTED, now=utcnow())
    assert lifecycle.lose_attempt(session, job, reason="node 1 (w2) was lost", requeue=True)
    assert job.status == JobStatus.QUEUED and "node 1 (w2) was lost" in (job.status_detail or "")
    assert session.scalars(select(JobSeat).where(JobSeat.job_id == job.id)).all() == []
    assert _messages(session) == [(job.id, 2)]


def test_a_cancelled_gathering_job_frees_its_seats(session: Session) -> None:
    job = _gang_job(session)
    seat = _seat(session, job, "w1")
    lifecycle.cancel(session, job)
    assert job.status == JobStatus.CANCELLED
    assert gang.look(session, seat, stale_s=60) is None


def test_a_spec_splits_its_devices_into_whole_nodes() -> None:
    base = {"method": "lora", "model": {"path": "tiny"}}
    assert JobSpec.model_validate({**base, "num_gpus": 4, "nodes": 2}).gpus_per_node == 2
    with pytest.raises(ValidationError, match="does not split into 2 nodes"):
        JobSpec.model_validate({**base, "num_gpus": 3, "nodes": 2})
