"""Reading reports from the rollups: whole months and days from rollup rows, edges from jobs.

A report window [from, to) is cut at UTC midnights: the whole months inside it are read from the
month rows, the remaining whole days from the day rows, and the partial days at its edges (a
`from` of 09:30, or of midnight in another time zone) from the jobs themselves. The figures are
additive, so the parts add up to what the jobs of the whole window give.

Rollups carry the tenant, the method, the final status and one group per row, so they answer a
report filtered by method, status and team, grouped by anything but single jobs, and filtered on
the grouped column or tag itself. Any other filter needs the jobs: `answerable` says so and the
report reads every job (its `source` says `rows`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, cast, false, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.jobs.filters import Grouping, ReportFilters
from app.models import report_rollups
from app.reports import aggregates, rollups

FACETS = ("method", "status")  # job columns that are rollup key columns
# PostgreSQL work_mem of a rollup read's transaction: a year's weekly spend by a tag groups ~57k
# day rows, which PostgreSQL's default 4MB sorted on disk (167 ms); in memory it hashes them
# (74 ms). bench/report_scale.py, 1M jobs.
ROLLUP_WORK_MEM = "32MB"
_R = report_rollups.c
Key = str | None
Range = tuple[date | None, date | None]


@dataclass(frozen=True)
class Split:
    """A window cut into whole months, whole days, and raw edges [start, end) of instants."""

    months: Range | None = None
    days: list[Range] = field(default_factory=list)
    edges: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def split(start: datetime | None, end: datetime | None, *, months: bool = True) -> Split:
    """Cut [start, end) (UTC instants, None = unbounded) at UTC days, and months if asked."""
    first = None if start is None else start.astimezone(UTC).date()
    if start is not None and first is not None and _midnight(first) < start:
        first += timedelta(days=1)
    last = None if end is None else end.astimezone(UTC).date()  # whole days end here
    if first is not None and last is not None and first >= last:
        return Split(edges=[(start, end)])
    edges: list[tuple[datetime | None, datetime | None]] = []
    if start is not None and first is not None and start < _midnight(first):
        edges.append((start, _midnight(first)))
    if end is not None and last is not None and _midnight(last) < end:
        edges.append((_midnight(last), end))
    if not months:
        return Split(days=[(first, last)], edges=edges)
    m_first = None if first is None else (first if first.day == 1 else _next_month(first))
    m_last = None if last is None else last.replace(day=1)
    if m_first is not None and m_last is not None and m_first >= m_last:
        return Split(days=[(first, last)], edges=edges)
    days: list[Range] = []
    if first is not None and m_first is not None and first < m_first:
        days.append((first, m_first))
    if last is not None and m_last is not None and m_last < last:
        days.append((m_last, last))
    return Split(months=(m_first, m_last), days=days, edges=edges)


def answerable(filters: ReportFilters, grouping: Grouping) -> bool:
    """Whether the rollups hold the report: every filter is a key column or the grouping's."""
    if grouping.kind == "job":
        return False
    for name in filters.columns:
        if name not in (*FACETS, "team") and name != grouping.kind:
            return False
    return all(grouping.kind == "tag" and key == grouping.tag_key for key in filters.tags)


def _in_range(grain: str, span: Range) -> ColumnElement[bool]:
    low, high = span
    out = [_R.grain == grain]
    if low is not None:
        out.append(_R.bucket_start >= low)
    if high is not None:
        out.append(_R.bucket_start < high)
    return and_(*out)


def _buckets(parts: Split) -> ColumnElement[bool]:
    ranges = [_in_range("day", span) for span in parts.days]
    if parts.months is not None:
        ranges.append(_in_range("month", parts.months))
    return or_(*ranges) if ranges else false()


def _tenant(filters: ReportFilters) -> ColumnElement[bool]:
    principal = filters.principal
    if principal is None or principal.is_admin:
        return true()
    if principal.team is not None:  # owner_key is '' on every row of a team (the key order)
        return and_(_R.tenant == principal.team, _R.owner_key == "")
    return and_(_R.tenant == "", _R.owner_key == principal.key_id)


def dim_of(grouping: Grouping) -> str:
    """The rollup dim holding a grouping's groups (`*` for none, method and status)."""
    if grouping.kind == "tag":
        return rollups.TAG_DIM_PREFIX + str(grouping.tag_key)
    if grouping.kind in rollups.DIM_COLUMNS:
        return grouping.kind
    return rollups.TOTAL_DIM


def _group_filter(filters: ReportFilters, grouping: Grouping) -> tuple[str, ...] | None:
    """The values a filter on the grouped column or tag keeps (None: no such filter)."""
    if grouping.kind == "tag":
        return filters.tags.get(str(grouping.tag_key))
    if grouping.kind in rollups.DIM_COLUMNS:
        return filters.columns.get(grouping.kind)
    return None


def _where(filters: ReportFilters, parts: Split) -> list[ColumnElement[bool]]:
    out = [_tenant(filters), _buckets(parts)]
    for name in FACETS:
        if name in filters.columns:
            out.append(_R[name].in_(filters.columns[name]))
    if "team" in filters.columns:
        out.append(_R.tenant.in_(filters.columns["team"]))
    return out


def query(
    session: Session,
    filters: ReportFilters,
    grouping: Grouping,
    parts: Split,
    bucket: Any = None,
    stats: tuple[str, ...] = aggregates.STAT_NAMES,
) -> Iterator[tuple[Any, Key, aggregates.Sums]]:
    """(bucket, group, figures) from the rollup rows of the window's whole months and days.

    `bucket`: a SQL expression of `bucket_start` to group by too (None: one bucket); `stats`:
    the figures read (the others are 0). A group column's or tag's null group (jobs without
    it) is the `*` row less its valued groups.
    """
    if not parts.days and parts.months is None:
        return
    dim, kept = dim_of(grouping), _group_filter(filters, grouping)
    if grouping.kind in FACETS:
        group: ColumnElement[Any] = _R[grouping.kind]
    elif dim == rollups.TOTAL_DIM:
        group = cast(None, _R.value.type)
    else:
        group = _R.value
    dims = [dim] if kept is not None or dim == rollups.TOTAL_DIM else [dim, rollups.TOTAL_DIM]
    where = [*_where(filters, parts), _R.dim.in_(dims)]
    if kept is not None:
        where.append(_R.value.in_(kept))
    bucket_col = (bucket if bucket is not None else cast(None, _R.bucket_start.type)).label("b")
    sums = [func.sum(_R[name]).label(name) for name in stats]
    stmt = (
        select(bucket_col, _R.dim.label("dim"), group.label("grp"), *sums)
        .where(*where)
        .group_by(bucket_col, _R.dim, group)
    )
    totals: dict[Any, aggregates.Sums] = {}
    valued: dict[Any, aggregates.Sums] = {}
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.set_config("work_mem", ROLLUP_WORK_MEM, True)))
    for row in session.execute(stmt).mappings():
        figures = aggregates.read(row)
        if row["dim"] == dim:
            yield row["b"], row["grp"], figures
            aggregates.add(valued.setdefault(row["b"], aggregates.zero()), figures)
        else:
            totals[row["b"]] = figures
    for b, figures in totals.items():
        rest = aggregates.add(dict(figures), valued.get(b, aggregates.zero()), sign=-1)
        aggregates.settle(rest)
        if rest["jobs"] > 0:
            yield b, None, rest
