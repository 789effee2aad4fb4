"""The job lifecycle on real rows: each transition's state, billing and events, and the job-ended
hooks run exactly once for every way a job ends (and never for one that goes on)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.errors import Conflict
from app.jobs import billing, lifecycle
from app.jobs.actuals import JobActuals
from app.jobs.metered import Artifact, Metered
from app.jobs.provenance import Provenance
from app.kit import outbox
from app.models import CostSource, Job, JobAttempt, JobEvent, JobStatus
from app.models.base import utcnow
from tests.reports.factory import make_job
from tests.support import ServiceEnv

SELF_HOSTED = Provenance(CostSource.SELF_HOSTED, None, 0.02, None, None, "aws cpu on_demand")


@pytest.fixture
def session(service_env: ServiceEnv) -> Iterator[Session]:
    """A session on the test database whose changes are rolled back (nothing is sent)."""
    with get_sessionmaker()() as s:
        yield s
        s.rollback()


@pytest.fixture
def ended(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, JobStatus]]:
    """The (job id, status) of each call of the job-ended hooks."""
    calls: list[tuple[str, JobStatus]] = []

    def hook(session: Session, job: Job) -> None:
        assert session.get(Job, job.id) is job  # called in the transaction that ends it
        calls.append((job.id, JobStatus(job.status)))

    monkeypatch.setattr(lifecycle, "END_HOOKS", [hook])
    return calls


def _queued(session: Session) -> Job:
    job = make_job(session, status=JobStatus.QUEUED, act_hours=None, act_peak=None)
    job.finished_at = job.started_at = None
    job.attempts = 0
    session.flush()
    return job


def _running(session: Session, *, attempts: int = 1) -> Job:
    job = _queued(session)
    job.attempts = attempts - 1
    lifecycle.claim(session, job, worker="w1", provenance=SELF_HOSTED, now=utcnow())
    job.heartbeat_at = utcnow() - timedelta(minutes=5)
    session.flush()
    return job


def _messages(session: Session, job: Job) -> list[str]:
    rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))
    return [e.message or "" for e in rows]


def test_claim_starts_a_billed_attempt_with_the_workers_provenance(session: Session) -> None:
    job = _running(session)
    assert (job.status, job.attempts, job.worker) == (JobStatus.RUNNING, 1, "w1")
    assert (job.cost_source, job.internal_usd_per_gpu_hour) == (CostSource.SELF_HOSTED, 0.02)
    attempt = session.get(JobAttempt, (job.id, 1))
    assert attempt is not None and attempt.outcome == billing.RUNNING
    assert _messages(session, job)[-1] == "running on w1 (attempt 1)"


def test_a_lost_attempt_with_one_left_is_requeued_and_sent_after_commit(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _running(session)
    assert lifecycle.lose_attempt(session, job, reason="worker w1 vanished", requeue=True)
    assert (job.status, job.worker, job.heartbeat_at) == (JobStatus.QUEUED, None, None)
    assert job.status_detail == (
        f"worker w1 vanished; re-queued on {job.queue} for attempt 2 of {lifecycle.MAX_ATTEMPTS}"
    )
    assert outbox.pending(session) == [outbox.RunJobMessage(job.id, job.queue)]
    lost = session.get(JobAttempt, (job.id, 1))
    assert lost is not None and lost.outcome == billing.LOST and lost.cost_usd is not None
    assert job.act_cost_usd == lost.cost_usd  # the lost attempt is billed
    assert ended == []


def test_a_lost_attempt_the_caller_claims_again_changes_only_the_bill(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _running(session)
    assert lifecycle.lose_attempt(session, job, reason="worker w1 restarted", requeue=False)
    assert job.status == JobStatus.RUNNING
    assert outbox.pending(session) == []
    lifecycle.claim(session, job, worker="w1", provenance=SELF_HOSTED, now=utcnow())
    assert job.attempts == 2
    assert ended == []


def test_the_last_attempt_lost_fails_the_job(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _running(session, attempts=lifecycle.MAX_ATTEMPTS)
    assert not lifecycle.lose_attempt(session, job, reason="worker w1 vanished", requeue=True)
    assert job.status == JobStatus.FAILED and job.finished_at is not None
    assert job.error == "worker w1 vanished; gave up after 2 attempts"
    assert _messages(session, job)[-1] == f"failed: {job.error}"
    assert outbox.pending(session) == []
    assert ended == [(job.id, JobStatus.FAILED)]


def test_a_lost_attempt_with_a_cancel_pending_ends_cancelled(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _running(session)
    lifecycle.cancel(session, job)
    assert job.status == JobStatus.CANCEL_REQUESTED
    assert ended == []
    assert not lifecycle.lose_attempt(session, job, reason="worker w1 vanished", requeue=True)
    assert (job.status, job.status_detail) == (
        JobStatus.CANCELLED,
        "cancelled; worker w1 vanished",
    )
    assert ended == [(job.id, JobStatus.CANCELLED)]


def test_cancel_ends_a_queued_job_and_refuses_an_ended_one(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _queued(session)
    lifecycle.cancel(session, job)
    assert (job.status, job.status_detail) == (JobStatus.CANCELLED, "cancelled before it started")
    assert _messages(session, job)[-1] == "cancelled while queued"
    with pytest.raises(Conflict):
        lifecycle.cancel(session, job)
    assert ended == [(job.id, JobStatus.CANCELLED)]


def test_finish_stores_the_metered_figures_and_bills_them(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _running(session)
    actuals = JobActuals(
        wall_s=30.0,
        gpu_hours=0.01,
        num_gpus=1,
        price_per_gpu_hour=job.price_per_gpu_hour,
        cost_usd=0.04,
        steps=5,
        tokens=4096,
        peak_memory_bytes=123_456,
        peak_memory_kind="cpu_rss",
        eval_loss=2.5,
        artifact_path="/tmp/local-artifact",
        artifact_weights_bytes=800,
    )
    result = Metered(actuals=actuals, artifact=Artifact(url="file:///a/job", total_bytes=900))
    lifecycle.finish(
        session, job, attempt=1, status=JobStatus.SUCCEEDED, detail="finished", result=result
    )
    assert (job.status, job.status_detail, job.error) == (JobStatus.SUCCEEDED, "finished", None)
    assert (job.act_wall_s, job.act_tokens, job.act_peak_bytes) == (30.0, 4096, 123_456)
    assert (job.act_peak_kind, job.eval_loss, job.act_cost_usd) == ("cpu_rss", 2.5, 0.04)
    assert (job.artifact_path, job.artifact_bytes) == ("file:///a/job", 900)
    assert job.actuals is not None and "artifact_path" not in job.actuals
    assert job.errors is not None
    assert job.errors["artifact_bytes"] == {"estimated": 1000, "actual": 800, "error_pct": 25.0}
    assert job.errors["complete_run"] is True
    attempt = session.get(JobAttempt, (job.id, 1))
    assert attempt is not None and (attempt.outcome, attempt.cost_usd) == ("succeeded", 0.04)
    assert ended == [(job.id, JobStatus.SUCCEEDED)]


def test_a_stopped_run_is_not_compared_on_time_and_money(session: Session) -> None:
    job = _running(session)
    lifecycle.finish(
        session,
        job,
        attempt=1,
        status=JobStatus.BUDGET_EXCEEDED,
        detail="stopped",
        result=Metered(actuals=None),
    )
    assert job.errors is not None
    assert "cost_usd" not in job.errors and job.errors["complete_run"] is False
    # nothing metered: the attempt is billed the time it held the device
    attempt = session.get(JobAttempt, (job.id, 1))
    assert attempt is not None and attempt.cost_usd is not None and attempt.cost_usd > 0
    assert job.act_cost_usd == attempt.cost_usd


def test_fail_ends_a_job_that_cannot_run(
    session: Session, ended: list[tuple[str, JobStatus]]
) -> None:
    job = _queued(session)
    lifecycle.fail(session, job, error="the stored job spec is not valid")
    assert (job.status, job.error) == (JobStatus.FAILED, "the stored job spec is not valid")
    assert ended == [(job.id, JobStatus.FAILED)]


def test_resend_touches_the_job_and_sends_it_after_commit(session: Session) -> None:
    job = _queued(session)
    before = job.updated_at
    lifecycle.resend(session, job, message="sent again")
    session.flush()
    assert job.updated_at > before
    assert outbox.pending(session) == [outbox.RunJobMessage(job.id, job.queue)]
    assert _messages(session, job)[-1] == "sent again"
