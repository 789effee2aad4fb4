"""Held-out evaluation: fitted on older jobs only, scored only on newer ones it never saw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.calibration import evaluation, service
from app.calibration.samples import FitSnapshot, modelled_seconds
from app.estimator.spec import Method
from app.models import Job
from tests.calibration.conftest import slowed_job

T0 = datetime(2025, 7, 1, tzinfo=UTC)
STEADY = [1.5, 1.46, 1.53, 1.49, 1.51, 1.47, 1.55, 1.5, 1.52, 1.48]


def _seed(session: Session, slowdowns: list[float]) -> list[str]:
    ids = []
    for i, slow in enumerate(slowdowns):
        job = slowed_job(
            session, slowdown=slow, mem=1.25, est_hours=3.0, finished_at=T0 + timedelta(days=i)
        )
        ids.append(job.id)
    session.commit()
    return ids


def test_calibration_helps_on_jobs_it_never_saw(session: Session) -> None:
    ids = _seed(session, STEADY)
    out = evaluation.evaluate(session, holdout_fraction=0.3, include_jobs=True)
    assert out.split_at is not None and out.jobs is not None
    assert out.heldout_jobs == 3 and out.fit_jobs == 7 and out.overlap == 0
    assert [j.job_id for j in out.jobs] == ids[-3:]  # the newest three
    assert all(j.finished_at >= out.split_at for j in out.jobs)
    fitted = service.fit_groups(session, finished_before=out.split_at)
    assert fitted[0].job_ids == frozenset(ids[:7])  # older jobs only
    assert out.overall is not None and out.overall.calibrated_jobs == 3
    for quantity in (out.overall.gpu_hours, out.overall.cost_usd, out.overall.peak_bytes):
        assert quantity.n == 3
        assert quantity.before_mape_pct is not None and quantity.after_mape_pct is not None
        assert quantity.after_mape_pct < quantity.before_mape_pct / 5
    # The estimates were too low (the jobs ran slower): signed error goes from < 0 to ~0.
    signed = out.overall.gpu_hours
    assert signed.before_mean_pct_error is not None and signed.after_mean_pct_error is not None
    assert signed.before_mean_pct_error < -20
    assert abs(signed.after_mean_pct_error) < 5
    assert [(g.gpu, g.method) for g in out.groups] == [("A100-80GB", "lora")]


def test_after_uses_only_the_older_fit(session: Session) -> None:
    # Spread-out older jobs, then slower newest ones (not outliers): a fit that saw them would
    # give a lower efficiency.
    ids = _seed(session, [1.2, 1.4, 1.6, 1.8, 1.3, 1.7, 1.5, 2.0, 2.1, 1.9])
    out = evaluation.evaluate(session, holdout_fraction=0.3, include_jobs=True)
    assert out.jobs is not None and [j.job_id for j in out.jobs] == ids[-3:]
    older = service.fit(session, finished_before=out.split_at)[("A100-80GB", Method.LORA)]
    everything = service.fit(session)[("A100-80GB", Method.LORA)]
    assert everything.jobs == 10 and older.jobs == 7
    assert everything.mfu is not None and older.mfu is not None
    assert everything.mfu < older.mfu * 0.97
    rows = {j.id: j for j in session.scalars(select(Job))}
    for scored in out.jobs:
        snap = FitSnapshot.model_validate(rows[scored.job_id].estimate_snapshot)
        assert snap.mfu is not None
        after_s = modelled_seconds(snap, mfu=older.mfu)
        before_s = modelled_seconds(snap, mfu=snap.mfu)
        assert after_s is not None and before_s is not None
        ratio = after_s / before_s
        assert scored.before_gpu_hours is not None and scored.before_peak_bytes is not None
        assert older.memory_factor is not None
        assert scored.after_gpu_hours == pytest.approx(scored.before_gpu_hours * ratio)
        assert scored.after_peak_bytes == pytest.approx(
            scored.before_peak_bytes * older.memory_factor
        )


def test_explicit_split_and_too_few_jobs(session: Session) -> None:
    assert evaluation.evaluate(session).heldout_jobs == 0
    _seed(session, STEADY[:6])
    out = evaluation.evaluate(session, split_at=T0 + timedelta(days=4))
    assert (out.fit_jobs, out.heldout_jobs, out.overlap) == (4, 2, 0)
    early = evaluation.evaluate(session, split_at=T0 + timedelta(days=2))
    assert early.fit_jobs == 0  # two jobs are below the minimum: nothing is fitted
    assert early.overall is not None and early.overall.calibrated_jobs == 0
    gh = early.overall.gpu_hours
    assert gh.after_mape_pct == pytest.approx(gh.before_mape_pct)  # unchanged without a fit
