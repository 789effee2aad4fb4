"""What a selection of jobs spent, accrued and committed in a period, in total or per group.

- **spent**: jobs that finished in the period, at their metered cost (`act_cost_usd`, the list
  price: what the reports' `spend_usd` shows and what budgets compare), every attempt included;
- **accrued**: jobs queued or running now, what their attempts cost so far: an ended attempt
  what it was billed, the running one the device time it held up to its last heartbeat at the
  job's price (the rule billing applies to an attempt whose worker died, app/jobs/billing.py);
- **committed**: the rest of those jobs' estimates, `min(estimate, max_cost_usd) - accrued` (a
  job's budget cap stops it), with the low-high band of the estimate's own basis: a calibrated
  estimate's band is narrower than a prior's (app/estimator/intervals.py).

Queued and running work belongs to the period that holds now; a finished job to the period it
finished in, as its FOCUS row's billing period does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from app.budgets.periods import Window
from app.estimator.intervals import time_band
from app.kit.instants import as_utc
from app.models import UNFINISHED_STATUSES, Job, JobAttempt

RUNNING_ATTEMPT = "running"  # JobAttempt.outcome of an attempt still under way
HOUR_S = 3600.0


@dataclass(frozen=True)
class Spend:
    """Money of a selection of jobs in one period (USD)."""

    spent_usd: float = 0.0
    accrued_usd: float = 0.0
    committed_usd: float = 0.0
    committed_low_usd: float = 0.0
    committed_high_usd: float = 0.0
    finished_jobs: int = 0
    active_jobs: int = 0
    # Spent by jobs that finished in the recent window asked for (the forecast's run rate).
    recent_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        """Spent + accrued + committed: what the period will have cost once its work ends."""
        return self.spent_usd + self.accrued_usd + self.committed_usd


@dataclass
class _Sums:
    spent: float = 0.0
    accrued: float = 0.0
    committed: float = 0.0
    low: float = 0.0
    high: float = 0.0
    finished: int = 0
    active: int = 0
    recent: float = 0.0
    ids: list[str] = field(default_factory=list)

    def frozen(self) -> Spend:
        return Spend(
            spent_usd=self.spent,
            accrued_usd=self.accrued,
            committed_usd=self.committed,
            committed_low_usd=self.low,
            committed_high_usd=self.high,
            finished_jobs=self.finished,
            active_jobs=self.active,
            recent_usd=self.recent,
        )


def expected_cost(
    est_cost_usd: float | None, max_cost_usd: float | None, factor: float = 1.0
) -> float:
    """What a job is expected to cost in all: its estimate (x `factor`), capped by its budget."""
    if est_cost_usd is None:
        return max_cost_usd or 0.0
    cost = est_cost_usd * factor
    return min(cost, max_cost_usd) if max_cost_usd is not None else cost


def _within(column: Any, window: Window) -> ColumnElement[bool]:
    return and_(column >= window.start, column < window.end)


def measure(
    session: Session,
    *,
    where: Sequence[ColumnElement[bool]],
    window: Window,
    now: datetime,
    group: Any = None,
    source: FromClause | None = None,
    recent: Window | None = None,
) -> dict[Any, Spend]:
    """Spend per value of `group` (one entry, key None, without one) of the jobs `where` selects.

    `source` is the FROM clause `group` needs (jobs joined to a tag, say); `recent` a window whose
    finished spend is summed apart, whatever the period (the forecast's run rate).
    """
    key = group if group is not None else literal_column("NULL")
    source = source if source is not None else Job.__table__
    sums: dict[Any, _Sums] = {}
    finished = _within(Job.finished_at, window)
    in_recent = _within(Job.finished_at, recent) if recent is not None else literal(False)
    stmt = (
        select(
            key.label("g"),
            func.count(case((finished, 1))).label("n"),
            func.sum(case((finished, Job.act_cost_usd))).label("spent"),
            func.sum(case((in_recent, Job.act_cost_usd))).label("recent"),
        )
        .select_from(source)
        .where(Job.finished_at.is_not(None), or_(finished, in_recent), *where)
    )
    if group is not None:
        stmt = stmt.group_by(group)
    for row in session.execute(stmt):
        got = sums.setdefault(row.g, _Sums())
        got.finished, got.spent, got.recent = int(row.n), row.spent or 0.0, row.recent or 0.0
    if window.holds(now):
        _add_active(session, sums, key=key, source=source, where=where)
    return {g: s.frozen() for g, s in sums.items()}


def _add_active(
    session: Session,
    sums: dict[Any, _Sums],
    *,
    key: Any,
    source: FromClause,
    where: Sequence[ColumnElement[bool]],
) -> None:
    stmt = (
        select(
            key.label("g"),
            Job.id,
            Job.est_cost_usd,
            Job.max_cost_usd,
            Job.price_per_gpu_hour,
            Job.num_gpus,
            Job.estimate_snapshot["basis"].as_string().label("basis"),
        )
        .select_from(source)
        .where(Job.status.in_(UNFINISHED_STATUSES), *where)
    )
    jobs = session.execute(stmt).all()
    accrued = _accrued(session, jobs)
    for job in jobs:
        got = sums.setdefault(job.g, _Sums())
        so_far = accrued.get(job.id, 0.0)
        low, high = time_band("calibrated" if job.basis == "calibrated" else "prior")
        got.active += 1
        got.accrued += so_far
        got.committed += max(expected_cost(job.est_cost_usd, job.max_cost_usd) - so_far, 0.0)
        got.low += max(expected_cost(job.est_cost_usd, job.max_cost_usd, low) - so_far, 0.0)
        got.high += max(expected_cost(job.est_cost_usd, job.max_cost_usd, high) - so_far, 0.0)


def _accrued(session: Session, jobs: Sequence[Any]) -> dict[str, float]:
    """What the attempts of these jobs cost so far, by job id."""
    ids = [job.id for job in jobs]
    if not ids:
        return {}
    price = {job.id: (job.price_per_gpu_hour, job.num_gpus) for job in jobs}
    out: dict[str, float] = {}
    for attempt in session.scalars(select(JobAttempt).where(JobAttempt.job_id.in_(ids))):
        if attempt.outcome == RUNNING_ATTEMPT:
            per_gpu_hour, gpus = price[attempt.job_id]
            held_s = (as_utc(attempt.last_seen_at) - as_utc(attempt.started_at)).total_seconds()
            cost = max(held_s, 0.0) / HOUR_S * gpus * per_gpu_hour
        else:
            cost = attempt.cost_usd or 0.0
        out[attempt.job_id] = out.get(attempt.job_id, 0.0) + cost
    return out
