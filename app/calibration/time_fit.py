"""Fit the time terms of one (GPU, method) from finished jobs: run overhead, per-step seconds, mfu.

The estimator's time for a run is

    run overhead + micro_steps x step_s + modelled step terms + compute_at_full_peak / mfu

(`app/estimator/compute.py`). Each finished job that metered its training loop gives one
equation: the measured seconds outside the loop (wall - train: start-up, evaluation, saving) and
the measured loop seconds. The run overhead is their weighted median. The loop is a weighted
least-squares fit of `train - modelled step terms = step_s x micro_steps + unit_compute / mfu`
over the jobs, with both unknowns kept non-negative; when the jobs all have about the same
compute per micro-step the two cannot be told apart, and only `mfu` is fitted (step_s = 0).
Jobs whose loop time is far from the fit (modified z-score of the log ratio) are dropped once
and the fit repeated. Newer jobs weigh more: the software stack and machines change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Iglewicz & Hoaglin (1993): modified z-score M = 0.6745 (x - median) / MAD; |M| > 3.5 is an
# outlier. The MAD floor keeps jobs that differ by run-to-run noise (1% in log space).
MODIFIED_Z_SCALE = 0.6745
MODIFIED_Z_LIMIT = 3.5
MIN_LOG_MAD = 0.01
# Fewer jobs than this cannot tell an outlier from the rule: with three, the median is one of
# them and the MAD the smaller of the other two distances, so any uneven trio loses a job.
MIN_JOBS_FOR_OUTLIERS = 5
# A job's weight halves for every this many newer jobs in its group: after ~100 jobs the old
# ones hardly count, so a new driver or library version takes over within a few dozen runs.
RECENCY_HALF_LIFE_JOBS = 25
# Compute per micro-step must vary by at least this factor across the jobs before step_s and
# mfu are fitted apart; below it they are collinear and only mfu is fitted.
IDENTIFIABLE_SPREAD = 1.5
MAX_MFU = 1.0  # an efficiency is a fraction of peak
# The self-check fits on the older jobs and scores the newest this share of them.
HOLDOUT_FRACTION = 0.3


@dataclass(frozen=True)
class TimeSample:
    """What one job's metering says about the time terms (all seconds, scaled to its steps)."""

    job_id: str
    outside_s: float  # measured wall - train: start-up, evaluation, saving
    train_s: float  # measured training loop
    micro_steps: float  # micro-steps the job ran
    unit_compute_s: float  # modelled matmul seconds at 100% of peak
    modelled_step_s: float  # modelled bandwidth-bound step terms (streaming, optimizer, ...)
    estimated_wall_s: float | None = None  # what the job's own estimate said (scaled)

    @property
    def wall_s(self) -> float:
        """Measured wall seconds."""
        return self.outside_s + self.train_s


@dataclass(frozen=True)
class TimeFit:
    """The fitted terms and the jobs behind them."""

    run_overhead_s: float | None
    step_s: float | None
    mfu: float | None
    used: int
    outliers: int
    used_ids: tuple[str, ...] = ()


def recency_weights(n: int) -> list[float]:
    """Weights of `n` jobs in time order (oldest first): the newest weighs 1."""
    return [0.5 ** ((n - 1 - i) / RECENCY_HALF_LIFE_JOBS) for i in range(n)]


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The value at which half of the total weight lies on either side."""
    pairs = sorted(zip(values, weights, strict=True))
    half, acc = sum(weights) / 2.0, 0.0
    for value, weight in pairs:
        acc += weight
        if acc >= half:
            return value
    return pairs[-1][0]


def _solve(samples: Sequence[TimeSample], weights: Sequence[float]) -> tuple[float, float]:
    """(step_s, 1/mfu) by weighted non-negative least squares on the loop time."""
    rows = [(s.micro_steps, s.unit_compute_s, s.train_s - s.modelled_step_s) for s in samples]
    per_step = [u / x for x, u, _ in rows if x > 0]
    spread = max(per_step) / min(per_step) if per_step and min(per_step) > 0 else 1.0

    def only_inverse_mfu() -> tuple[float, float]:
        uu = sum(w * u * u for w, (_, u, _) in zip(weights, rows, strict=True))
        ur = sum(w * u * r for w, (_, u, r) in zip(weights, rows, strict=True))
        return 0.0, max(ur / uu, 0.0) if uu > 0 else 0.0

    if spread < IDENTIFIABLE_SPREAD:
        return only_inverse_mfu()
    sxx = sum(w * x * x for w, (x, _, _) in zip(weights, rows, strict=True))
    sxu = sum(w * x * u for w, (x, u, _) in zip(weights, rows, strict=True))
    suu = sum(w * u * u for w, (_, u, _) in zip(weights, rows, strict=True))
    sxr = sum(w * x * r for w, (x, _, r) in zip(weights, rows, strict=True))
    sur = sum(w * u * r for w, (_, u, r) in zip(weights, rows, strict=True))
    det = sxx * suu - sxu * sxu
    if det <= 0:
        return only_inverse_mfu()
    step = (sxr * suu - sur * sxu) / det
    inverse = (sur * sxx - sxr * sxu) / det
    if step < 0:
        return only_inverse_mfu()
    if inverse < 0:
        return max(sxr / sxx, 0.0), 0.0
    return step, inverse


def _predicted(s: TimeSample, step: float, inverse: float) -> float:
    return s.modelled_step_s + step * s.micro_steps + s.unit_compute_s * inverse


def _outliers(samples: Sequence[TimeSample], step: float, inverse: float) -> set[str]:
    logs = {
        s.job_id: math.log(s.train_s / p)
        for s in samples
        if (p := _predicted(s, step, inverse)) > 0 and s.train_s > 0
    }
    if len(logs) < MIN_JOBS_FOR_OUTLIERS:
        return set()
    median = statistics.median(logs.values())
    mad = max(statistics.median(abs(v - median) for v in logs.values()), MIN_LOG_MAD)
    return {
        job
        for job, v in logs.items()
        if abs(MODIFIED_Z_SCALE * (v - median) / mad) > MODIFIED_Z_LIMIT
    }


def fit_time(samples: Sequence[TimeSample]) -> TimeFit:
    """The time terms `samples` (oldest first) support; None for a term they cannot give."""
    usable = [s for s in samples if s.train_s > 0 and s.micro_steps > 0 and s.outside_s >= 0]
    if not usable:
        return TimeFit(None, None, None, 0, 0)
    weights = recency_weights(len(usable))
    step, inverse = _solve(usable, weights)
    dropped = _outliers(usable, step, inverse)
    if dropped and len(usable) - len(dropped) >= 2:
        kept = [(s, w) for s, w in zip(usable, weights, strict=True) if s.job_id not in dropped]
        usable, weights = [s for s, _ in kept], [w for _, w in kept]
        step, inverse = _solve(usable, weights)
    else:
        dropped = set()
    overhead = weighted_median([s.outside_s for s in usable], weights)
    mfu = min(1.0 / inverse, MAX_MFU) if inverse > 0 else MAX_MFU
    return TimeFit(
        run_overhead_s=overhead,
        step_s=step,
        mfu=mfu,
        used=len(usable),
        outliers=len(dropped),
        used_ids=tuple(s.job_id for s in usable),
    )


def predicted_wall_s(fit: TimeFit, sample: TimeSample) -> float | None:
    """The wall seconds `fit` gives for the run `sample` describes (None if it cannot)."""
    if fit.run_overhead_s is None or fit.mfu is None:
        return None
    loop = sample.modelled_step_s + (fit.step_s or 0.0) * sample.micro_steps
    return fit.run_overhead_s + loop + sample.unit_compute_s / fit.mfu


def _mean_abs_error(pairs: Sequence[tuple[float, float]]) -> float:
    return statistics.fmean(abs(est - act) / act for est, act in pairs)


def worse_than_prior(samples: Sequence[TimeSample]) -> bool | None:
    """Fit on the older jobs, score the newest HOLDOUT_FRACTION: is the fit worse than the
    estimates those jobs were given? None when there are too few jobs to hold any out."""
    usable = [s for s in samples if s.estimated_wall_s and s.wall_s > 0]
    held = max(1, round(len(usable) * HOLDOUT_FRACTION))
    if len(usable) - held < 3:
        return None
    fit = fit_time(usable[:-held])
    after = [(p, s.wall_s) for s in usable[-held:] if (p := predicted_wall_s(fit, s)) is not None]
    before = [(float(s.estimated_wall_s or 0.0), s.wall_s) for s in usable[-held:]]
    if not after:
        return None
    return _mean_abs_error(after) > _mean_abs_error(before)
