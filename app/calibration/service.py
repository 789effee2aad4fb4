"""Calibration: fit the time terms and a memory factor per (GPU, method) from finished jobs.

Time: jobs that metered their training loop give the run overhead, a factor on the modelled
per-step floor and the efficiency (time_fit.py). Jobs without a loop time only give an
efficiency (samples.py), combined by the geometric mean. Memory: each job's measured/estimated
peak ratio. Outliers are dropped with the modified z-score on the logarithm (ratios are
multiplicative), and a value is only used once MIN_JOBS jobs back it.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import visible
from app.calibration.samples import JobSample, load_samples
from app.calibration.time_fit import TimeFit, fit_time, worse_than_prior
from app.estimator.calibration_types import Calibration
from app.estimator.spec import Method
from app.models import Job, JobStatus

MIN_JOBS = 3  # jobs a fitted value needs before estimates use it; with fewer, keep the prior
# Iglewicz & Hoaglin (1993), "How to Detect and Handle Outliers": modified z-score
# M = 0.6745 (x - median) / MAD; |M| > 3.5 marks an outlier.
MODIFIED_Z_SCALE = 0.6745
MODIFIED_Z_LIMIT = 3.5
# When most jobs agree exactly the MAD is 0 and any other value would be an "outlier"; a floor
# of 0.01 in log space (1% apart) keeps jobs that differ by run-to-run noise.
MIN_LOG_MAD = 0.01
MAX_MFU = 1.0  # an efficiency is a fraction of peak; a fit above it is capped (and flagged)
CPU_PEAK_KIND = "cpu_rss"  # what CPU jobs report: the process's peak resident set
_METHODS = frozenset(m.value for m in Method)


@dataclass(frozen=True)
class RobustFit:
    """A geometric mean over the jobs that survived the outlier guard."""

    value: float | None
    used: int
    outliers: int
    used_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupFit:
    """Everything fitted for one (GPU, method), with the counts behind it."""

    gpu: str
    method: str
    eligible_jobs: int
    mfu: RobustFit
    memory: RobustFit
    mfu_capped: bool = False
    efficiency_sources: dict[str, int] = field(default_factory=dict)
    peak_kind: str | None = None
    time: TimeFit = field(default_factory=lambda: TimeFit(None, None, None, 0, 0))
    # The group's own newer jobs were estimated better by their prior estimates than by a fit
    # on its older jobs: the time terms are not used (memory still is).
    time_worse_than_prior: bool = False

    @property
    def job_ids(self) -> frozenset[str]:
        """The jobs a fitted value rests on."""
        ids = frozenset(self.mfu.used_ids) | frozenset(self.memory.used_ids)
        return ids | frozenset(self.time.used_ids)

    @property
    def time_fitted(self) -> bool:
        """True when enough jobs metered their loop to fit every time term."""
        return self.time.used >= MIN_JOBS

    def calibration(self) -> Calibration | None:
        """The estimator's view: only values with at least MIN_JOBS jobs behind them."""
        mfu = self.mfu.value if self.mfu.used >= MIN_JOBS else None
        overhead = host_scale = None
        if self.time_worse_than_prior:
            mfu = None
        elif self.time_fitted:
            mfu, overhead, host_scale = (
                self.time.mfu,
                self.time.run_overhead_s,
                self.time.host_scale,
            )
        memory = self.memory.value if self.memory.used >= MIN_JOBS else None
        if mfu is None and memory is None:
            return None
        return Calibration(
            mfu=mfu,
            memory_factor=memory,
            jobs=len(self.job_ids),
            run_overhead_s=overhead,
            host_scale=host_scale,
        )


def robust_fit(values: Sequence[tuple[str, float]]) -> RobustFit:
    """Geometric mean of the positive `values` after dropping modified-z outliers in log space."""
    pairs = [(job_id, math.log(v)) for job_id, v in values if v > 0]
    if not pairs:
        return RobustFit(None, 0, 0)
    logs = [x for _, x in pairs]
    if len(logs) < MIN_JOBS:
        # Too few to tell an outlier from the rule: keep them, the value is not used anyway.
        kept = pairs
    else:
        median = statistics.median(logs)
        mad = max(statistics.median(abs(x - median) for x in logs), MIN_LOG_MAD)
        kept = [
            (job_id, x)
            for job_id, x in pairs
            if abs(MODIFIED_Z_SCALE * (x - median) / mad) <= MODIFIED_Z_LIMIT
        ]
    value = math.exp(statistics.fmean(x for _, x in kept))
    return RobustFit(value, len(kept), len(pairs) - len(kept), tuple(j for j, _ in kept))


def _fit_group(gpu: str, method: str, samples: list[JobSample]) -> GroupFit:
    eff = [(s.job_id, s.efficiency) for s in samples if s.efficiency is not None]
    kinds = Counter(s.peak_kind for s in samples if s.memory_ratio is not None)
    # Only peaks of one kind are comparable: take the most common one.
    kind = kinds.most_common(1)[0][0] if kinds else None
    mem = [
        (s.job_id, s.memory_ratio)
        for s in samples
        if s.memory_ratio is not None and s.peak_kind == kind
    ]
    mfu = robust_fit(eff)
    capped = mfu.value is not None and mfu.value > MAX_MFU
    if capped:
        mfu = RobustFit(MAX_MFU, mfu.used, mfu.outliers, mfu.used_ids)
    sources = Counter(s.efficiency_source for s in samples if s.efficiency_source)
    timed = [s.time for s in samples if s.time is not None]
    return GroupFit(
        gpu=gpu,
        method=method,
        eligible_jobs=len(samples),
        mfu=mfu,
        memory=robust_fit(mem),
        mfu_capped=capped,
        efficiency_sources=dict(sources),
        peak_kind=kind or (CPU_PEAK_KIND if gpu == "cpu" and kinds else None),
        time=fit_time(timed),
        time_worse_than_prior=bool(worse_than_prior(timed)),
    )


def fit_samples(samples: Iterable[JobSample]) -> list[GroupFit]:
    """Fit every (GPU, method) present in `samples`."""
    groups: dict[tuple[str, str], list[JobSample]] = {}
    for s in samples:
        groups.setdefault((s.gpu, s.method), []).append(s)
    return [_fit_group(gpu, method, rows) for (gpu, method), rows in sorted(groups.items())]


def tenant_jobs(principal: Principal | None) -> ColumnElement[bool] | None:
    """The jobs whose fit `principal`'s estimates use: its tenant's; None (every job) for an
    admin or for no principal (the fit over all tenants)."""
    if principal is None or principal.is_admin:
        return None
    return visible(principal, team=Job.team, created_by_key_id=Job.created_by_key_id)


def fit_groups(
    session: Session,
    *,
    principal: Principal | None = None,
    exclude_job_ids: Sequence[str] = (),
    finished_before: datetime | None = None,
) -> list[GroupFit]:
    """The detailed fit of every (GPU, method) with succeeded full runs of the tenant."""
    samples = load_samples(
        session,
        exclude_job_ids=exclude_job_ids,
        finished_before=finished_before,
        tenant=tenant_jobs(principal),
    )
    return fit_samples(samples)


def to_table(groups: Iterable[GroupFit]) -> dict[tuple[str, Method], Calibration]:
    """The groups with a usable fit, keyed as the estimator looks them up."""
    table: dict[tuple[str, Method], Calibration] = {}
    for group in groups:
        calibration = group.calibration()
        if calibration is not None and group.method in _METHODS:
            table[(group.gpu, Method(group.method))] = calibration
    return table


def fit(
    session: Session,
    *,
    principal: Principal | None = None,
    exclude_job_ids: Sequence[str] = (),
    finished_before: datetime | None = None,
) -> dict[tuple[str, Method], Calibration]:
    """Per (GPU, method), the calibration the tenant's finished jobs support (only groups with
    enough jobs)."""
    return to_table(
        fit_groups(
            session,
            principal=principal,
            exclude_job_ids=exclude_job_ids,
            finished_before=finished_before,
        )
    )


_current: dict[str, tuple[tuple[Any, ...], Mapping[tuple[str, Method], Calibration]]] = {}
_current_lock = threading.Lock()


def _tenant_key(principal: Principal | None) -> str:
    if principal is None or principal.is_admin:
        return "all"
    return f"team:{principal.team}" if principal.team is not None else f"key:{principal.key_id}"


def current(
    session: Session, *, principal: Principal | None = None
) -> Mapping[tuple[str, Method], Calibration]:
    """`fit(session)` of the caller's tenant, reused until one of its jobs succeeds: what its
    new estimates should be given.

    One cheap query (count and newest finish of the tenant's succeeded jobs) decides whether
    the cached fit still stands. The mapping is read-only and shared.
    """
    tenant = tenant_jobs(principal)
    succeeded = select(func.count(), func.max(Job.finished_at)).where(
        Job.status == JobStatus.SUCCEEDED, *([] if tenant is None else [tenant])
    )
    key = tuple(session.execute(succeeded).one())
    cache_key = f"{session.get_bind().engine.url} {_tenant_key(principal)}"
    with _current_lock:
        cached = _current.get(cache_key)
    if cached is not None and cached[0] == key:
        return cached[1]
    table = MappingProxyType(fit(session, principal=principal))
    with _current_lock:
        _current[cache_key] = (key, table)
    return table
