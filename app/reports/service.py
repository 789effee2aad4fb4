"""Estimate-vs-actual and spend reports: additive figures per group, then means and errors.

A report the rollups hold (app/reports/rollup_read.py) adds the rollup rows of the window's whole
months and days to the jobs of its partial edge days: its work grows with the groups and days,
not with the jobs. Any other report is one aggregate query over the jobs (`GROUP BY`, tag groups
through an outer join on `job_tags`). Either way the figures are the counts and sums of
app/reports/aggregates.py. Errors are (estimate - actual) / actual, so a positive number means
the estimate was too high. A quantity is compared only on jobs that have both figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from app.jobs.filters import JOB_COLUMNS, Grouping, ReportFilters, describe
from app.models import Job, JobTag, report_rollups
from app.reports import aggregates, rollup_read
from app.reports.aggregates import QUANTITIES, QUANTITY_STATS, Sums
from app.reports.schemas import (
    Bucket,
    EstimateVsActualReport,
    PeakCompared,
    QuantityError,
    ReportRow,
    ReportSource,
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
MEAN_QUANTITIES = ("peak_bytes",)  # shown as a mean of peaks, the others as sums
Group = str | None


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


def _group(value: Any) -> Group:
    return None if value is None else str(value)


def _row(sums: Sums, group: Group) -> ReportRow:
    quantities = {}
    for name in QUANTITIES:
        n, n_rel, est, act, rel, abs_rel = (sums[f"{name}_{stat}"] for stat in QUANTITY_STATS)
        mean = name in MEAN_QUANTITIES
        quantities[name] = QuantityError(
            n=int(n),
            estimated=(est / n if mean else est) if n else None,
            actual=(act / n if mean else act) if n else None,
            mean_error=(est - act) / n if n else None,
            mean_pct_error=rel / n_rel * PCT if n_rel else None,
            mape_pct=abs_rel / n_rel * PCT if n_rel else None,
        )
    return ReportRow(
        group=group,
        jobs=int(sums["jobs"]),
        spend_usd=sums["spend_usd"],
        billed_usd=sums["billed_usd"],
        effective_usd=sums["effective_usd"],
        peak_compared=PeakCompared(
            allocated=int(sums["peak_vs_allocated"]), per_gpu=int(sums["peak_vs_per_gpu"])
        ),
        **quantities,
    )


def _raw_groups(
    session: Session, filters: ReportFilters, grouping: Grouping, limit: int | None
) -> list[tuple[Group, Sums]]:
    """Figures per group from the jobs, biggest spend first (`limit` + 1 groups at most)."""
    if grouping.kind == "none":
        stmt = select(*aggregates.columns()).select_from(Job.__table__).where(filters.where())
        sums = aggregates.read(session.execute(stmt).mappings().one())
        return [(None, sums)] if sums["jobs"] else []
    expr, source = group_source(grouping)
    grouped: Select[Any] = (
        select(expr.label("grp"), *aggregates.columns())
        .select_from(source)
        .where(filters.where())
        .group_by(expr)
        .order_by(literal_column("spend_usd").desc(), expr)
    )
    if limit is not None:
        grouped = grouped.limit(limit + 1)
    return [(_group(r["grp"]), aggregates.read(r)) for r in session.execute(grouped).mappings()]


def _edges(filters: ReportFilters, parts: rollup_read.Split) -> Iterator[ReportFilters]:
    for start, end in parts.edges:
        yield dataclasses.replace(filters, start=start, end=end)


def _merge(into: dict[Any, Sums], key: Any, sums: Sums) -> None:
    if key in into:
        aggregates.add(into[key], sums)
    else:
        into[key] = dict(sums)


def _by_spend(groups: Iterable[tuple[Group, Sums]]) -> list[tuple[Group, Sums]]:
    """Biggest spend first, then by group value, the null group last among equals."""
    return sorted(groups, key=lambda g: (-g[1]["spend_usd"], g[0] is None, g[0] or ""))


def _rollup_groups(
    session: Session, filters: ReportFilters, grouping: Grouping
) -> list[tuple[Group, Sums]]:
    """Every group's figures: rollup rows for whole months and days, jobs at the edges."""
    parts = rollup_read.split(filters.start, filters.end)
    merged: dict[Group, Sums] = {}
    for _, group, sums in rollup_read.query(session, filters, grouping, parts):
        _merge(merged, _group(group), sums)
    for edge in _edges(filters, parts):
        for group, sums in _raw_groups(session, edge, grouping, limit=None):
            _merge(merged, group, sums)
    settled = ((g, aggregates.settle(s)) for g, s in merged.items())
    return _by_spend((g, s) for g, s in settled if s["jobs"] > 0)


def _source(filters: ReportFilters, grouping: Grouping, use_rollups: bool) -> ReportSource:
    return "rollups" if use_rollups and rollup_read.answerable(filters, grouping) else "rows"


def estimate_vs_actual(
    session: Session,
    *,
    filters: ReportFilters,
    grouping: Grouping,
    limit: int = DEFAULT_LIMIT,
    use_rollups: bool = True,
) -> EstimateVsActualReport:
    """Per group: jobs, spend and the error of cost, GPU-hours and peak memory estimates.

    From the rollups where they hold the report, unless `use_rollups` is False (the jobs then).
    """
    source = _source(filters, grouping, use_rollups)
    if source == "rollups":
        groups = _rollup_groups(session, filters, grouping)
        totals = aggregates.total(s for _, s in groups)
    else:
        groups = _raw_groups(session, filters, grouping, limit)
        if len(groups) > limit and grouping.kind != "none":
            # Every grouping puts each job in exactly one group: the cut groups count too.
            totals = _raw_groups(session, filters, Grouping("none"), None)[0][1]
        else:
            totals = aggregates.total(s for _, s in groups)
    total = _row(totals, None)
    truncated = len(groups) > limit
    rows = [_row(sums, group) for group, sums in groups[:limit]]
    return EstimateVsActualReport(
        group_by=grouping.label,
        filters=describe(filters),
        rows=rows,
        total=total,
        truncated=truncated,
        source=source,
    )


def bucket_of(dialect: str, bucket: Bucket, day: Any) -> ColumnElement[Any]:
    """First day of the UTC day/week (Monday)/month holding `day` (a UTC date or instant)."""
    if dialect == "postgresql":
        return func.date_trunc(literal_column(f"'{bucket}'"), day)
    if bucket == "day":
        return func.date(day)
    if bucket == "month":
        return func.strftime(literal_column("'%Y-%m-01'"), day)
    # SQLite's %w counts from Sunday = 0; step back to the Monday that starts the ISO week.
    back = (cast(func.strftime(literal_column("'%w'"), day), Integer) + 6).self_group() % 7
    return func.date(day, literal("-").concat(cast(back, String)).concat(" days"))


def _bucket_expr(dialect: str, bucket: Bucket) -> ColumnElement[Any]:
    """First instant of the UTC day/week/month holding `finished_at`."""
    if dialect == "postgresql":
        return bucket_of(dialect, bucket, func.timezone(literal_column("'UTC'"), Job.finished_at))
    return bucket_of(dialect, bucket, Job.finished_at)


def _rollup_bucket(dialect: str, bucket: Bucket) -> ColumnElement[Any]:
    day = report_rollups.c.bucket_start
    if dialect == "postgresql":
        return cast(bucket_of(dialect, bucket, cast(day, DateTime)), Date)
    return bucket_of(dialect, bucket, day)


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def _raw_spend(
    session: Session, filters: ReportFilters, grouping: Grouping, bucket: Bucket
) -> Iterator[tuple[str, Group, Sums]]:
    """(bucket start, group, figures) from the jobs."""
    dialect = session.get_bind().dialect.name
    if grouping.kind == "none":
        expr: ColumnElement[Any] = literal_column("NULL")
        source: FromClause = Job.__table__
        keys: list[ColumnElement[Any]] = [literal_column("bucket_start")]
    else:
        expr, source = group_source(grouping)
        keys = [literal_column("bucket_start"), expr]
    stmt = (
        select(
            _bucket_expr(dialect, bucket).label("bucket_start"),
            expr.label("grp"),
            *aggregates.columns(),
        )
        .select_from(source)
        .where(filters.where())
        # By output name: PostgreSQL would not match two copies of a bound-parameter expression.
        .group_by(*keys)
    )
    for r in session.execute(stmt).mappings():
        yield _day(r["bucket_start"]), _group(r["grp"]), aggregates.read(r)


def _spend_cells(
    session: Session, filters: ReportFilters, grouping: Grouping, bucket: Bucket, source: str
) -> dict[tuple[str, Group], Sums]:
    if source == "rows":
        return {(b, g): s for b, g, s in _raw_spend(session, filters, grouping, bucket)}
    dialect = session.get_bind().dialect.name
    # Weeks straddle months: only month buckets can use month rows.
    parts = rollup_read.split(filters.start, filters.end, months=bucket == "month")
    cells: dict[tuple[str, Group], Sums] = {}
    expr = _rollup_bucket(dialect, bucket)
    figures = rollup_read.query(
        session, filters, grouping, parts, bucket=expr, stats=aggregates.SPEND_STATS
    )
    for b, group, sums in figures:
        _merge(cells, (_day(b), _group(group)), sums)
    for edge in _edges(filters, parts):
        for b, group, sums in _raw_spend(session, edge, grouping, bucket):
            _merge(cells, (b, group), sums)
    return cells


def spend(
    session: Session,
    *,
    filters: ReportFilters,
    grouping: Grouping,
    bucket: Bucket,
    limit: int = DEFAULT_LIMIT,
    use_rollups: bool = True,
) -> SpendReport:
    """Actual spend per time bucket and group, oldest bucket first (rollups as above)."""
    source = _source(filters, grouping, use_rollups)
    cells = _spend_cells(session, filters, grouping, bucket, source)
    ordered = sorted(cells.items(), key=lambda c: (c[0][0], c[0][1] is None, c[0][1] or ""))
    rows = []
    for (bucket_start, group), sums in ordered:
        aggregates.settle(sums)
        if sums["jobs"] <= 0:
            continue
        rows.append(
            SpendRow(
                bucket_start=bucket_start,
                group=group,
                jobs=int(sums["jobs"]),
                spend_usd=sums["spend_usd"],
                billed_usd=sums["billed_usd"],
                effective_usd=sums["effective_usd"],
                gpu_hours=sums["gpu_hours_all"],
                estimated_cost_usd=sums["est_cost_all"],
            )
        )
    return SpendReport(
        bucket=bucket,
        group_by=grouping.label,
        filters=describe(filters),
        rows=rows[:limit],
        truncated=len(rows) > limit,
        source=source,
    )
