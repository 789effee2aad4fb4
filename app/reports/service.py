"""Estimate-vs-actual and spend reports, computed as one aggregate query each in the database.

Grouping happens in SQL (`GROUP BY`, tag groups through an outer join on `job_tags`); Python only
renames the aggregated columns. Errors are (estimate - actual) / actual, so a positive number
means the estimate was too high. A quantity is compared only on jobs that have both figures.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Float,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from app.jobs.filters import JOB_COLUMNS, Grouping, ReportFilters, describe
from app.models import Job, JobTag
from app.models.peak import peak_estimate_column, vs_allocated_column
from app.reports.focus_columns import billed_cost, effective_cost
from app.reports.schemas import (
    QUANTITIES,
    Bucket,
    EstimateVsActualReport,
    PeakCompared,
    QuantityError,
    ReportRow,
    SpendReport,
    SpendRow,
)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000  # rows of one report response; beyond this use the FOCUS export
PCT = 100.0
SPEND_COLUMNS = (
    "bucket_start",
    "group",
    "jobs",
    "spend_usd",
    "billed_usd",
    "effective_usd",
    "gpu_hours",
    "estimated_cost_usd",
)

# A metered peak is compared with the estimate of the same quantity (app/jobs/snapshot.py
# PEAK_COMPARED): torch's allocated peak with the estimate's allocated bytes, a CPU process's
# resident set with what must fit (per_gpu_bytes); jobs from before the estimate stored its
# allocated bytes fall back to per_gpu_bytes.
_VS_ALLOCATED = vs_allocated_column()
_PEAK_ESTIMATE = peak_estimate_column()
# (quantity, estimate column, actual column, whether the report shows a mean instead of a sum)
_QUANTITY_COLUMNS = (
    ("cost_usd", Job.est_cost_usd, Job.act_cost_usd, False),
    ("gpu_hours", Job.est_gpu_hours, Job.act_gpu_hours, False),
    ("peak_bytes", _PEAK_ESTIMATE, Job.act_peak_bytes, True),  # a mean of peaks
)
# Only additive aggregates (count, sum): the means are derived from them, and the totals are the
# sums of the groups' sums. PostgreSQL's sum(float8) is also far cheaper than avg(float8), whose
# state carries a sum of squares.
_QUANTITY_STATS = ("n", "n_rel", "est", "act", "rel", "abs_rel")
_SUMS = (
    "jobs",
    "spend_usd",
    "billed_usd",
    "effective_usd",
    *(f"{q}_{s}" for q in QUANTITIES for s in _QUANTITY_STATS),
    "peak_vs_allocated",
    "peak_vs_per_gpu",
)


def _quantity_aggregates(name: str, est: Any, act: Any) -> list[ColumnElement[Any]]:
    est_f, act_f = cast(est, Float), cast(act, Float)
    both = and_(est.is_not(None), act.is_not(None))
    rel = case((and_(both, act_f > 0), (est_f - act_f) / act_f))
    return [
        func.count(case((both, 1))).label(f"{name}_n"),
        func.count(rel).label(f"{name}_n_rel"),
        func.sum(case((both, est_f))).label(f"{name}_est"),
        func.sum(case((both, act_f))).label(f"{name}_act"),
        func.sum(rel).label(f"{name}_rel"),
        func.sum(func.abs(rel)).label(f"{name}_abs_rel"),
    ]


def _provenance_sums() -> list[ColumnElement[Any]]:
    """What was invoiced and what it cost the organisation (app/reports/focus_columns.py)."""
    has_cost = Job.act_cost_usd.is_not(None)
    return [
        func.coalesce(func.sum(case((has_cost, billed_cost()))), 0.0).label("billed_usd"),
        func.coalesce(func.sum(case((has_cost, effective_cost()))), 0.0).label("effective_usd"),
    ]


def _aggregates() -> list[ColumnElement[Any]]:
    cols: list[ColumnElement[Any]] = [
        func.count().label("jobs"),
        func.coalesce(func.sum(Job.act_cost_usd), 0.0).label("spend_usd"),
        *_provenance_sums(),
    ]
    for name, est, act, _ in _QUANTITY_COLUMNS:
        cols.extend(_quantity_aggregates(name, est, act))
    peak = and_(_PEAK_ESTIMATE.is_not(None), Job.act_peak_bytes.is_not(None))
    cols.append(func.count(case((and_(peak, _VS_ALLOCATED), 1))).label("peak_vs_allocated"))
    cols.append(func.count(case((and_(peak, ~_VS_ALLOCATED), 1))).label("peak_vs_per_gpu"))
    return cols


def group_source(grouping: Grouping) -> tuple[Any, FromClause]:
    """The grouping expression and the FROM clause it needs (jobs, or jobs ⟕ one tag key)."""
    jobs = Job.__table__
    if grouping.kind == "tag":
        tag = aliased(JobTag)
        joined = jobs.outerjoin(tag, and_(tag.job_id == Job.id, tag.key == grouping.tag_key))
        return tag.value, joined
    if grouping.kind == "job":
        return Job.id, jobs
    return JOB_COLUMNS[grouping.kind], jobs


def _sums(mapping: Any) -> dict[str, float]:
    return {k: float(mapping[k] or 0) for k in _SUMS}


def _row(sums: dict[str, float], group: Any) -> ReportRow:
    quantities = {}
    for name, _, _, mean in _QUANTITY_COLUMNS:
        n, n_rel, est, act, rel, abs_rel = (sums[f"{name}_{stat}"] for stat in _QUANTITY_STATS)
        quantities[name] = QuantityError(
            n=int(n),
            estimated=(est / n if mean else est) if n else None,
            actual=(act / n if mean else act) if n else None,
            mean_error=(est - act) / n if n else None,
            mean_pct_error=rel / n_rel * PCT if n_rel else None,
            mape_pct=abs_rel / n_rel * PCT if n_rel else None,
        )
    return ReportRow(
        group=None if group is None else str(group),
        jobs=int(sums["jobs"]),
        spend_usd=sums["spend_usd"],
        billed_usd=sums["billed_usd"],
        effective_usd=sums["effective_usd"],
        peak_compared=PeakCompared(
            allocated=int(sums["peak_vs_allocated"]), per_gpu=int(sums["peak_vs_per_gpu"])
        ),
        **quantities,
    )


def estimate_vs_actual(
    session: Session, *, filters: ReportFilters, grouping: Grouping, limit: int = DEFAULT_LIMIT
) -> EstimateVsActualReport:
    """Per group: jobs, spend and the error of cost, GPU-hours and peak memory estimates.

    One aggregate query; a second one for the totals only when `limit` cut groups off.
    """
    if grouping.kind == "none":
        groups: list[tuple[Any, dict[str, float]]] = []
    else:
        expr, source = group_source(grouping)
        grouped: Select[Any] = (
            select(expr.label("grp"), *_aggregates())
            .select_from(source)
            .where(filters.where())
            .group_by(expr)
            .order_by(literal_column("spend_usd").desc(), expr)
            .limit(limit + 1)
        )
        groups = [(r["grp"], _sums(r)) for r in session.execute(grouped).mappings()]
    truncated = len(groups) > limit
    if grouping.kind == "none" or truncated:
        # Every grouping puts each job in exactly one group, so otherwise the total is the sum.
        total_stmt = select(*_aggregates()).select_from(Job.__table__).where(filters.where())
        totals = _sums(session.execute(total_stmt).mappings().one())
    else:
        totals = {k: sum(g[k] for _, g in groups) for k in _SUMS}
    total = _row(totals, None)
    rows = [_row(sums, group) for group, sums in groups[:limit]]
    if grouping.kind == "none" and total.jobs:
        rows = [total]
    return EstimateVsActualReport(
        group_by=grouping.label,
        filters=describe(filters),
        rows=rows,
        total=total,
        truncated=truncated,
    )


def _bucket_expr(dialect: str, bucket: Bucket) -> ColumnElement[Any]:
    """First instant of the UTC day/week (Monday)/month holding `finished_at`."""
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), Job.finished_at)
        return func.date_trunc(literal_column(f"'{bucket}'"), utc)
    if bucket == "day":
        return func.strftime("%Y-%m-%d", Job.finished_at)
    if bucket == "month":
        return func.strftime("%Y-%m-01", Job.finished_at)
    # SQLite's %w counts from Sunday = 0; step back to the Monday that starts the ISO week.
    back = (cast(func.strftime("%w", Job.finished_at), Integer) + 6).self_group() % 7
    return func.date(Job.finished_at, literal("-").concat(cast(back, String)).concat(" days"))


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def spend(
    session: Session,
    *,
    filters: ReportFilters,
    grouping: Grouping,
    bucket: Bucket,
    limit: int = DEFAULT_LIMIT,
) -> SpendReport:
    """Actual spend per time bucket and group, oldest bucket first."""
    dialect = session.get_bind().dialect.name
    if grouping.kind == "none":
        expr: ColumnElement[Any] = literal_column("NULL")
        source: FromClause = Job.__table__
        keys: list[ColumnElement[Any]] = [literal_column("bucket_start")]
    else:
        expr, source = group_source(grouping)
        keys = [literal_column("bucket_start"), expr]
    bucket_col = _bucket_expr(dialect, bucket).label("bucket_start")
    stmt = (
        select(
            bucket_col,
            expr.label("grp"),
            func.count().label("jobs"),
            func.coalesce(func.sum(Job.act_cost_usd), 0.0).label("spend_usd"),
            *_provenance_sums(),
            func.coalesce(func.sum(Job.act_gpu_hours), 0.0).label("gpu_hours"),
            func.coalesce(func.sum(Job.est_cost_usd), 0.0).label("estimated_cost_usd"),
        )
        .select_from(source)
        .where(filters.where())
        # By output name: PostgreSQL would not match two copies of a bound-parameter expression.
        .group_by(*keys)
        .order_by(*keys)
        .limit(limit + 1)
    )
    rows = [
        SpendRow(
            bucket_start=_day(r["bucket_start"]),
            group=None if r["grp"] is None else str(r["grp"]),
            jobs=int(r["jobs"]),
            spend_usd=float(r["spend_usd"]),
            billed_usd=float(r["billed_usd"]),
            effective_usd=float(r["effective_usd"]),
            gpu_hours=float(r["gpu_hours"]),
            estimated_cost_usd=float(r["estimated_cost_usd"]),
        )
        for r in session.execute(stmt).mappings()
    ]
    return SpendReport(
        bucket=bucket,
        group_by=grouping.label,
        filters=describe(filters),
        rows=rows[:limit],
        truncated=len(rows) > limit,
    )
