"""Fit the time terms of one (GPU, method) from finished jobs: run overhead, floor, efficiency.

The estimator's time for a run is (`app/estimator/compute.py`)

    run overhead + overlapped(host_scale x modelled host, device terms + unit_compute / mfu)
    + visible communication

with `overlapped` the combination of host and device time of `app/estimator/floor.py`. Each
finished job that metered its training loop gives one equation: the measured seconds outside
the loop (wall - train: start-up, evaluation, saving) and the measured loop seconds. The run
overhead is their weighted median. The loop gives the per-step floor (a factor on the modelled
host time) and the efficiency of large matmuls: a weighted least-squares fit of the log of the
loop time, searched on a grid (coarse, then finer around the best), with a weak pull towards
the prior (factor 1, the efficiency the jobs were estimated with) so that jobs that cannot tell
the two apart (all the same size) move them only as far as the data demand. Jobs whose loop
time is far from the fit (modified z-score of the log ratio) are dropped once and the fit
repeated. Newer jobs weigh more: the software stack and machines change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from app.estimator.floor import OVERLAP_POWER_GPU, overlapped

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
# Weight of the pull towards the prior (log host factor 0, log efficiency at its prior), in
# units of one newest job's squared log error: moving a term by a factor e costs what one job
# off by 4.5% does, so data that tell the terms apart move them, and only ties are broken.
PRIOR_WEIGHT = 0.002
# The grid searched: host factor and efficiency between these, in log steps, then twice again
# around the best point at a fifth of the spacing.
HOST_SCALE_RANGE = (0.05, 20.0)
MFU_RANGE = (0.005, 1.0)
GRID_POINTS = 31
REFINE_POINTS = 11
REFINE_ROUNDS = 2
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
    unit_compute_s: float  # modelled matmul seconds at 100% of peak (large-matmul efficiency 1)
    device_s: float  # modelled bandwidth-bound device terms (streaming, optimizer, ...)
    host_s: float  # modelled host seconds (the per-step floor) before any calibrated factor
    comm_s: float = 0.0  # modelled visible communication
    overlap_power: float = OVERLAP_POWER_GPU  # how host and device combine on its device
    prior_mfu: float | None = None  # the large-matmul efficiency its estimate used
    estimated_wall_s: float | None = None  # what the job's own estimate said (scaled)

    @property
    def wall_s(self) -> float:
        """Measured wall seconds."""
        return self.outside_s + self.train_s

    def loop_s(self, host_scale: float, mfu: float) -> float:
        """The training loop this job's terms give at `host_scale` and `mfu`."""
        device = self.device_s + self.unit_compute_s / mfu
        return overlapped(self.host_s * host_scale, device, self.overlap_power) + self.comm_s


@dataclass(frozen=True)
class TimeFit:
    """The fitted terms and the jobs behind them."""

    run_overhead_s: float | None
    host_scale: float | None
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


def _log_grid(low: float, high: float, points: int) -> list[float]:
    step = (math.log(high) - math.log(low)) / (points - 1)
    return [math.exp(math.log(low) + i * step) for i in range(points)]


def _solve(samples: Sequence[TimeSample], weights: Sequence[float]) -> tuple[float, float]:
    """(host factor, mfu) minimising the weighted squared log error of the loop times."""
    priors = [s.prior_mfu for s in samples if s.prior_mfu]
    prior_mfu = weighted_median(priors, [1.0] * len(priors)) if priors else None

    def loss(scale: float, mfu: float) -> float:
        total = sum(
            w * math.log(s.loop_s(scale, mfu) / s.train_s) ** 2
            for s, w in zip(samples, weights, strict=True)
        )
        pull = math.log(scale) ** 2
        if prior_mfu is not None:
            pull += math.log(mfu / prior_mfu) ** 2
        return total + PRIOR_WEIGHT * pull

    scales = _log_grid(*HOST_SCALE_RANGE, GRID_POINTS)
    mfus = _log_grid(*MFU_RANGE, GRID_POINTS)
    best = min((loss(h, m), h, m) for h in scales for m in mfus)
    span_h = math.log(scales[1] / scales[0])
    span_m = math.log(mfus[1] / mfus[0])
    for _ in range(REFINE_ROUNDS):
        _, h0, m0 = best
        scales = _log_grid(h0 * math.exp(-span_h), h0 * math.exp(span_h), REFINE_POINTS)
        mfus = [
            m
            for m in _log_grid(m0 * math.exp(-span_m), m0 * math.exp(span_m), REFINE_POINTS)
            if m <= MAX_MFU
        ]
        best = min(best, *((loss(h, m), h, m) for h in scales for m in mfus))
        span_h, span_m = span_h / 5, span_m / 5
    return best[1], best[2]


def _outliers(samples: Sequence[TimeSample], scale: float, mfu: float) -> set[str]:
    logs = {
        s.job_id: math.log(s.train_s / p)
        for s in samples
        if (p := s.loop_s(scale, mfu)) > 0 and s.train_s > 0
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
    usable = [
        s
        for s in samples
        if s.train_s > 0 and s.micro_steps > 0 and s.outside_s >= 0 and s.unit_compute_s > 0
    ]
    if not usable:
        return TimeFit(None, None, None, 0, 0)
    weights = recency_weights(len(usable))
    scale, mfu = _solve(usable, weights)
    dropped = _outliers(usable, scale, mfu)
    if dropped and len(usable) - len(dropped) >= 2:
        kept = [(s, w) for s, w in zip(usable, weights, strict=True) if s.job_id not in dropped]
        usable, weights = [s for s, _ in kept], [w for _, w in kept]
        scale, mfu = _solve(usable, weights)
    else:
        dropped = set()
    overhead = weighted_median([s.outside_s for s in usable], weights)
    return TimeFit(
        run_overhead_s=overhead,
        host_scale=scale,
        mfu=mfu,
        used=len(usable),
        outliers=len(dropped),
        used_ids=tuple(s.job_id for s in usable),
    )


def predicted_wall_s(fit: TimeFit, sample: TimeSample) -> float | None:
    """The wall seconds `fit` gives for the run `sample` describes (None if it cannot)."""
    if fit.run_overhead_s is None or fit.mfu is None:
        return None
    return fit.run_overhead_s + sample.loop_s(fit.host_scale or 1.0, fit.mfu)


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
