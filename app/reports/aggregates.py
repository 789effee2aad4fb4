"""The additive figures every report is built from: counts and sums over a set of jobs.

Each figure is a count or a sum, so the figures of a set of jobs are the sums of the figures of
any split of it: the raw report query aggregates them over jobs, the rollups store them per day
or month and group (app/reports/rollups.py), and a report adds rollup rows and the raw rows of
its window's edges together. Means and errors are derived from them afterwards
(app/reports/service.py). Errors are (estimate - actual) / actual; a quantity is compared only on
jobs that have both figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from app.models import Job
from app.models.peak import peak_estimate_column, vs_allocated_column
from app.reports.focus_columns import billed_cost, effective_cost

QUANTITIES = ("cost_usd", "gpu_hours", "peak_bytes")
QUANTITY_STATS = ("n", "n_rel", "est", "act", "rel", "abs_rel")


@dataclass(frozen=True)
class Stat:
    """One additive figure: its value for one job, summed over the jobs of a query.

    A count's value is 1 or 0; a sum's is the quantity, or null where the job does not count.
    `counted_by` names the count of the jobs a sum runs over: where that count is 0 the sum is
    exactly 0, whatever a subtraction of floats left behind (rollups add and take away).
    """

    name: str
    row: Any  # a column or SQL expression over the jobs table
    counted_by: str | None = None

    @property
    def is_count(self) -> bool:
        """Whether the figure counts jobs (an integer) rather than sums a quantity."""
        return self.counted_by is None


def _one_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return case((condition, 1), else_=0)


def _quantity(name: str, est: Any, act: Any) -> list[Stat]:
    est_f, act_f = cast(est, Float), cast(act, Float)
    both = and_(est.is_not(None), act.is_not(None))
    relative = and_(both, act_f > 0)
    rel = case((relative, (est_f - act_f) / act_f))
    return [
        Stat(f"{name}_n", _one_if(both)),
        Stat(f"{name}_n_rel", _one_if(relative)),
        Stat(f"{name}_est", case((both, est_f)), f"{name}_n"),
        Stat(f"{name}_act", case((both, act_f)), f"{name}_n"),
        Stat(f"{name}_rel", rel, f"{name}_n_rel"),
        Stat(f"{name}_abs_rel", func.abs(rel), f"{name}_n_rel"),
    ]


def _stats() -> tuple[Stat, ...]:
    # A metered peak is compared with the estimate of the same quantity (app/models/peak.py):
    # torch's allocated peak with the estimate's allocated bytes, a CPU process's resident set
    # with what must fit (per_gpu_bytes).
    peak_estimate, vs_allocated = peak_estimate_column(), vs_allocated_column()
    has_cost = Job.act_cost_usd.is_not(None)
    peak = and_(peak_estimate.is_not(None), Job.act_peak_bytes.is_not(None))
    return (
        Stat("jobs", literal_column("1")),
        Stat("spend_n", _one_if(has_cost)),
        Stat("spend_usd", Job.act_cost_usd, "spend_n"),
        # What was invoiced and what it cost the organisation (app/reports/focus_columns.py).
        Stat("billed_usd", case((has_cost, billed_cost())), "spend_n"),
        Stat("effective_usd", case((has_cost, effective_cost())), "spend_n"),
        *_quantity("cost_usd", Job.est_cost_usd, Job.act_cost_usd),
        *_quantity("gpu_hours", Job.est_gpu_hours, Job.act_gpu_hours),
        *_quantity("peak_bytes", peak_estimate, Job.act_peak_bytes),
        Stat("peak_vs_allocated", _one_if(and_(peak, vs_allocated))),
        Stat("peak_vs_per_gpu", _one_if(and_(peak, ~vs_allocated))),
        # The spend report's GPU-hours and estimated cost, over every job (not only compared).
        Stat("gpu_hours_all_n", _one_if(Job.act_gpu_hours.is_not(None))),
        Stat("gpu_hours_all", Job.act_gpu_hours, "gpu_hours_all_n"),
        Stat("est_cost_all_n", _one_if(Job.est_cost_usd.is_not(None))),
        Stat("est_cost_all", Job.est_cost_usd, "est_cost_all_n"),
    )


STATS = _stats()
STAT_NAMES = tuple(s.name for s in STATS)
# What the spend report shows, and the counts that say when its sums are empty.
SPEND_STATS = (
    "jobs",
    "spend_n",
    "spend_usd",
    "billed_usd",
    "effective_usd",
    "gpu_hours_all_n",
    "gpu_hours_all",
    "est_cost_all_n",
    "est_cost_all",
)
_BY_NAME = {s.name: s for s in STATS}

Sums = dict[str, float]


def columns() -> list[ColumnElement[Any]]:
    """Every figure as a labelled aggregate over the jobs of a query."""
    return [func.coalesce(func.sum(s.row), 0).label(s.name) for s in STATS]


def row_columns() -> list[ColumnElement[Any]]:
    """Every figure's value for each job, labelled (summed later)."""
    return [s.row.label(s.name) for s in STATS]


def read(mapping: Any) -> Sums:
    """The figures of one result row (a sum it lacks or that is null is 0), empty sums 0."""
    # A plain dict first: a result row's own get() raises and catches inside for each name it
    # lacks (a spend row holds nine of the figures: ~50 ms a year's weekly report).
    values = dict(mapping)
    sums = {name: float(values.get(name) or 0) for name in STAT_NAMES}
    return settle(sums)


def settle(sums: Sums) -> Sums:
    """Counts rounded to integers and the sums of empty counts set to 0, in place."""
    for stat in STATS:
        if stat.is_count:
            sums[stat.name] = float(round(sums[stat.name]))
    for stat in STATS:
        if stat.counted_by is not None and sums[stat.counted_by] == 0:
            sums[stat.name] = 0.0
    return sums


def zero() -> Sums:
    """The figures of no jobs."""
    return dict.fromkeys(STAT_NAMES, 0.0)


def add(into: Sums, other: Mapping[str, float], sign: int = 1) -> Sums:
    """`into` += sign x `other`, figure by figure; returns `into`."""
    for name in STAT_NAMES:
        into[name] += sign * other[name]
    return into


def total(parts: Iterable[Mapping[str, float]]) -> Sums:
    """The figures of the union of disjoint sets of jobs."""
    out = zero()
    for part in parts:
        add(out, part)
    return settle(out)


def stat(name: str) -> Stat:
    """The figure called `name`."""
    return _BY_NAME[name]
