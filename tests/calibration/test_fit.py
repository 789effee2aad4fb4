"""The calibration fit: which jobs count, the outlier guard, the minimum, the memory factor."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from app.calibration import service
from app.calibration.samples import (
    MIN_COMPUTE_SHARE,
    FitSnapshot,
    JobScaled,
    job_efficiency,
    steady_loop_s,
)
from app.calibration.time_fit import TimeSample, fit_time, predicted_wall_s, worse_than_prior
from app.estimator.floor import OVERLAP_POWER_CPU, OVERLAP_POWER_GPU, overlapped
from app.estimator.spec import Method
from app.models import JobStatus
from tests.calibration.conftest import slowed_job

T0 = datetime(2025, 6, 1, tzinfo=UTC)
PRIOR = 0.36
SLOWDOWNS = [1.45, 1.5, 1.55, 1.48, 1.52]  # the matmuls ran ~1.5x slower than the prior says


def _seed_a100_lora(session: Session) -> list[str]:
    ids = []
    for i, slow in enumerate(SLOWDOWNS):
        job = slowed_job(
            session,
            slowdown=slow,
            mem=1.2,
            mfu=PRIOR,
            est_hours=2.0,
            finished_at=T0 + timedelta(hours=i),
        )
        ids.append(job.id)
    return ids


def test_fit_from_succeeded_full_runs(session: Session) -> None:
    ids = _seed_a100_lora(session)
    # Noise the guard must keep out: an outlier, stopped runs and a cut-short "success".
    outlier = slowed_job(
        session,
        slowdown=15.0,
        mem=1.2,
        mfu=PRIOR,
        est_hours=2.0,
        finished_at=T0 + timedelta(hours=9),
    )
    for status in (JobStatus.BUDGET_EXCEEDED, JobStatus.CANCELLED, JobStatus.FAILED):
        slowed_job(
            session,
            slowdown=0.2,
            mem=3.0,
            mfu=PRIOR,
            status=status,
            finished_at=T0 + timedelta(hours=10),
        )
    slowed_job(
        session,
        slowdown=0.2,
        mem=3.0,
        mfu=PRIOR,
        complete_run=False,
        finished_at=T0 + timedelta(hours=11),
    )
    session.commit()

    groups = {(g.gpu, g.method): g for g in service.fit_groups(session)}
    group = groups[("A100-80GB", "lora")]
    assert group.eligible_jobs == len(SLOWDOWNS) + 1  # the succeeded ones; the outlier too
    assert group.mfu.outliers == 1 and outlier.id not in group.mfu.used_ids
    assert set(group.mfu.used_ids) == set(ids)
    want = math.exp(statistics.fmean(math.log(PRIOR / s) for s in SLOWDOWNS))
    assert group.mfu.value == pytest.approx(want, rel=1e-9)
    assert group.memory.value == pytest.approx(1.2, rel=1e-6)

    table = service.fit(session)
    cal = table[("A100-80GB", Method.LORA)]
    assert cal.mfu == pytest.approx(want) and cal.memory_factor == pytest.approx(1.2, rel=1e-6)
    assert cal.jobs == len(set(group.mfu.used_ids) | set(group.memory.used_ids))


def test_too_few_jobs_are_not_used(session: Session) -> None:
    for i in range(service.MIN_JOBS - 1):
        slowed_job(
            session,
            slowdown=2.0,
            gpu="H100-80GB-SXM",
            method="qlora",
            finished_at=T0 + timedelta(hours=i),
        )
    session.commit()
    groups = service.fit_groups(session)
    assert [(g.gpu, g.method, g.mfu.used) for g in groups] == [
        ("H100-80GB-SXM", "qlora", service.MIN_JOBS - 1)
    ]
    assert groups[0].calibration() is None
    assert service.fit(session) == {}


def test_exclusions(session: Session) -> None:
    ids = _seed_a100_lora(session)
    session.commit()
    full = service.fit(session)[("A100-80GB", Method.LORA)]
    fewer = service.fit(session, exclude_job_ids=ids[:1])[("A100-80GB", Method.LORA)]
    assert (full.jobs, fewer.jobs) == (5, 4)
    assert fewer.mfu != pytest.approx(full.mfu, rel=1e-12)
    older = service.fit(session, finished_before=T0 + timedelta(hours=3))
    assert older[("A100-80GB", Method.LORA)].jobs == 3
    assert service.fit(session, finished_before=T0 + timedelta(hours=2)) == {}


def test_a_job_that_trained_other_than_its_estimate_never_enters_a_fit(session: Session) -> None:
    _seed_a100_lora(session)
    session.commit()
    genuine = service.fit(session)[("A100-80GB", Method.LORA)]
    # Three runs 5x slower than their estimates said, because they trained another model or
    # dataset (spec.as_estimated, decided at submit): left out, the fit is the genuine one's.
    others = [
        slowed_job(session, slowdown=5.0, mfu=PRIOR, finished_at=T0 + timedelta(hours=10 + i))
        for i in range(3)
    ]
    for job in others:
        job.spec = {**job.spec, "as_estimated": False}
    session.commit()
    fitted = service.fit(session)[("A100-80GB", Method.LORA)]
    assert fitted.jobs == genuine.jobs == 5
    assert fitted.mfu == pytest.approx(genuine.mfu, rel=1e-12)
    (group,) = service.fit_groups(session)
    assert group.eligible_jobs == 5
    for job in others:  # the same runs, as estimated, are read (and then judged as outliers)
        job.spec = {**job.spec, "as_estimated": True}
    session.commit()
    (group,) = service.fit_groups(session)
    assert group.eligible_jobs == 8


def test_memory_fit_ignores_peaks_it_cannot_compare(session: Session) -> None:
    for i in range(3):
        slowed_job(session, slowdown=1.0, mem=1.3, finished_at=T0 + timedelta(hours=i))
    # Estimated with a calibrated memory factor that the snapshot did not record: the raw
    # estimate is unknown, so the job must not feed the memory fit (it would chase itself).
    slowed_job(session, slowdown=1.0, mem=0.5, basis="calibrated", finished_at=T0)
    # A different kind of peak (CPU RSS among CUDA peaks) is not comparable either.
    slowed_job(session, slowdown=1.0, mem=9.0, peak_kind="cpu_rss", finished_at=T0)
    session.commit()
    group = service.fit_groups(session)[0]
    assert group.memory.used == 3 and group.memory.value == pytest.approx(1.3, rel=1e-6)
    assert group.peak_kind == "cuda_max_reserved"
    assert group.mfu.used == 5  # the efficiency of all five still counts


def test_fitted_efficiency_is_capped_at_one(session: Session) -> None:
    for i in range(3):
        slowed_job(session, slowdown=0.2, mfu=0.5, finished_at=T0 + timedelta(hours=i))
    session.commit()
    group = service.fit_groups(session)[0]
    assert group.mfu_capped and group.mfu.value == 1.0


def test_efficiency_from_wall_time_and_its_limits() -> None:
    snap = FitSnapshot.model_validate(
        {
            "mfu": 0.4,
            "steps": 100,
            "time": {"compute_s": 900.0, "optimizer_s": 100.0, "overhead_s": 60.0},
        }
    )
    # No training-loop time: the wall time less the modelled start-up and per-step terms.
    mfu, source = job_efficiency(snap, wall_s=60.0 + 100.0 + 1800.0)
    assert source == "wall_time" and mfu == pytest.approx(0.2)
    # A run capped at half its steps does half the per-step work.
    half = snap.model_copy(update={"job_scaled": JobScaled(steps=50)})
    mfu, _ = job_efficiency(half, wall_s=60.0 + 50.0 + 900.0)
    assert mfu == pytest.approx(0.2)
    # When the modelled fixed terms eat nearly all the time, fall back to the worker's MFU.
    tiny = 60.0 + 100.0 + MIN_COMPUTE_SHARE * 100.0
    assert job_efficiency(snap, wall_s=tiny, act_mfu=0.03) == (0.03, "measured_mfu")
    assert job_efficiency(snap, wall_s=tiny) == (None, None)
    # No stored time breakdown: scale by estimated over actual hours.
    bare = FitSnapshot(mfu=0.4)
    mfu, basis = job_efficiency(bare, wall_s=1.0, est_gpu_hours=1.0, act_gpu_hours=2.0)
    assert mfu == pytest.approx(0.2) and basis == "hours_ratio"


def test_current_is_reused_until_a_job_succeeds(session: Session) -> None:
    _seed_a100_lora(session)
    session.commit()
    first = service.current(session)
    assert service.current(session) is first  # nothing new: the same fit, not recomputed
    assert first[("A100-80GB", Method.LORA)].jobs == len(SLOWDOWNS)
    slowed_job(session, slowdown=1.5, status=JobStatus.FAILED, finished_at=T0)
    session.commit()
    assert service.current(session) is first  # a failed job changes nothing
    slowed_job(session, slowdown=1.5, mem=1.2, mfu=PRIOR, finished_at=T0 + timedelta(days=1))
    session.commit()
    second = service.current(session)
    assert second is not first
    assert second[("A100-80GB", Method.LORA)].jobs == len(SLOWDOWNS) + 1


def _timed(job: int, steps: float, train_s: float, estimated_wall_s: float) -> TimeSample:
    return TimeSample(
        job_id=f"j{job}",
        outside_s=5.0,
        train_s=train_s,
        micro_steps=steps,
        unit_compute_s=steps * 0.01,
        device_s=0.0,
        host_s=steps * 0.001,
        prior_mfu=0.3,
        estimated_wall_s=estimated_wall_s,
    )


@pytest.mark.parametrize("power", [OVERLAP_POWER_GPU, OVERLAP_POWER_CPU])
def test_time_fit_learns_overhead_floor_and_efficiency(power: float) -> None:
    # Jobs of different depth (host floor) and width (compute per step): loop time =
    # overlapped(1.7 x modelled host, 0.2 s per step of streaming + compute at 25% of peak).
    shapes = [(10, 0.01, 0.02), (40, 0.01, 0.05), (20, 0.04, 0.01), (80, 0.04, 0.03)]
    shapes.append((30, 0.02, 0.1))
    samples = []
    for i, (n, compute, host) in enumerate(shapes):
        true = overlapped(1.7 * n * host, n * 0.002 + n * compute / 0.25, power)
        samples.append(
            TimeSample(
                f"j{i}", 5.0 + i % 2, true, n, n * compute, n * 0.002, n * host,
                overlap_power=power, prior_mfu=0.4,
            )
        )  # fmt: skip
    fit = fit_time(samples)
    assert fit.used == 5 and fit.outliers == 0
    assert fit.host_scale == pytest.approx(1.7, rel=0.03)
    assert fit.mfu == pytest.approx(0.25, rel=0.03)
    assert fit.run_overhead_s in (5.0, 6.0)
    assert fit.run_overhead_s is not None
    for sample in samples:
        predicted = predicted_wall_s(fit, sample)
        assert predicted is not None
        assert predicted - fit.run_overhead_s == pytest.approx(sample.train_s, rel=0.02)


def test_jobs_of_one_size_keep_the_prior_floor() -> None:
    # Every job the same shape, compute-bound: the floor cannot be told apart, so it stays
    # near the prior (factor 1) while the efficiency moves to what the jobs took.
    samples = [
        TimeSample(f"j{i}", 5.0, overlapped(0.1, 10 * 0.05 / 0.2, 4.0), 10, 0.5, 0.0, 0.1,
                   prior_mfu=0.4)
        for i in range(4)
    ]  # fmt: skip
    fit = fit_time(samples)
    assert fit.mfu == pytest.approx(0.2, rel=0.05)
    assert fit.host_scale == pytest.approx(1.0, rel=0.5)


def test_a_fit_worse_than_the_prior_on_newer_jobs_is_flagged() -> None:
    # Prior estimates exact; the jobs' loop times jump around, so a fit on the older ones
    # misses the newer ones more than their own estimates did.
    noisy = [_timed(i, 10 * (i + 1), t, 5.0 + t) for i, t in enumerate([1, 30, 2, 40, 3, 50, 4])]
    noisy = [replace(s, estimated_wall_s=s.wall_s) for s in noisy]
    assert worse_than_prior(noisy) is True
    # Prior estimates 5x too high, jobs consistent: the fit is better.
    steady = [_timed(i, 10 * (i + 1), 0.1 * 10 * (i + 1), 0.0) for i in range(7)]
    steady = [replace(s, estimated_wall_s=5 * s.wall_s) for s in steady]
    assert worse_than_prior(steady) is False
    assert worse_than_prior(steady[:3]) is None  # too few to hold any out


def test_three_uneven_jobs_are_all_kept() -> None:
    # Three real CPU jobs of 10/40/80 steps: the shortest pays more per step (its fixed costs
    # weigh more). With three jobs no outlier can be told from the rule: all three are fitted.
    trio = [_timed(0, 10, 0.29, 13.0), _timed(1, 40, 0.51, 16.2), _timed(2, 80, 0.91, 13.4)]
    fit = fit_time(trio)
    assert fit.used == 3 and fit.outliers == 0
    # Five steady jobs but one ten times slower than the rest: that one is dropped.
    steady = [(10, 0.12), (40, 0.5), (80, 0.95), (20, 0.25), (60, 7.0)]
    five = [_timed(i, steps, train, 14.0) for i, (steps, train) in enumerate(steady)]
    fit = fit_time(five)
    assert fit.used == 4 and fit.outliers == 1 and "j4" not in fit.used_ids


def test_first_step_set_up_is_run_overhead() -> None:
    # The worker's warmup_s (first step beyond a steady one) leaves the loop time.
    assert steady_loop_s(3.0, 1.0) == pytest.approx(2.0)
    assert steady_loop_s(3.0, None) == pytest.approx(3.0)
    assert steady_loop_s(3.0, 5.0) == 0.0  # never negative
    assert steady_loop_s(None, 1.0) is None
