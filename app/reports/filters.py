"""Query parameters shared by the report routes: time window, column and tag filters, grouping.

Every report reads the same filters, validated once here into a `ReportFilters` that turns into
SQL `WHERE` clauses. A job belongs to a window by its `finished_at` (the moment its cost is
known); jobs that have not finished are never in a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_

from app.auth.service import Principal
from app.auth.tenancy import visible
from app.estimator.spec import Method
from app.inputs import to_utc
from app.instants import iso_z
from app.models import Job, JobStatus
from app.tag_filters import (
    TAG_KEY,
    TAG_PARAM_PREFIX,
    bad_param,
    parse_tag_filter,
    split_values,
    tag_clauses,
)

# Column filters: query parameter -> job column.
COLUMN_FILTERS = {
    "method": Job.method,
    "gpu": Job.gpu,
    "model": Job.model_ref,
    "status": Job.status,
    "provider": Job.provider,
    "team": Job.team,
    "cost_source": Job.cost_source,
}
# group_by values that name a job column; `tag:<key>` and `job` are handled apart.
GROUP_COLUMNS = {
    "method": Job.method,
    "gpu": Job.gpu,
    "model": Job.model_ref,
    "provider": Job.provider,
    "status": Job.status,
    "team": Job.team,
    "cost_source": Job.cost_source,
}
GROUP_CHOICES = (*GROUP_COLUMNS, "job", "tag:<key>")


def as_utc(value: datetime | None, *, name: str = "from") -> datetime | None:
    """`value` in UTC (naive is taken as UTC); 422 naming `name` when UTC cannot hold it."""
    if value is None:
        return None
    try:
        return to_utc(value)
    except ValueError as exc:
        raise bad_param(name, f"{name}: {exc}") from None


@dataclass(frozen=True)
class ReportFilters:
    """Which jobs a report covers: finished in [start, end), matching every filter given."""

    start: datetime | None = None
    end: datetime | None = None
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The caller: a report covers only its tenant's jobs (app/auth/tenancy.py); None = every job
    # (internal callers, never a request).
    principal: Principal | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses selecting these jobs from `jobs`."""
        out: list[ColumnElement[bool]] = [Job.finished_at.is_not(None)]
        if self.principal is not None:
            out.append(
                visible(self.principal, team=Job.team, created_by_key_id=Job.created_by_key_id)
            )
        if self.start is not None:
            out.append(Job.finished_at >= self.start)
        if self.end is not None:
            out.append(Job.finished_at < self.end)
        for name, values in self.columns.items():
            out.append(COLUMN_FILTERS[name].in_(values))
        out.extend(tag_clauses(self.tags))
        return out

    def where(self) -> ColumnElement[bool]:
        """All clauses joined with AND."""
        return and_(*self.clauses())


def parse_filters(
    *,
    start: datetime | None,
    end: datetime | None,
    params: Mapping[str, list[str]],
    allowed: Iterable[str],
    principal: Principal | None = None,
) -> ReportFilters:
    """Validate the window and the filter parameters; unknown parameters are refused by name.

    `params` maps every query parameter to its values; `allowed` names the non-filter
    parameters the route itself declares (from, to, group_by, ...).
    """
    start, end = as_utc(start, name="from"), as_utc(end, name="to")
    if start is not None and end is not None and start > end:
        raise bad_param("from", "from must not be later than to")
    known = set(allowed)
    columns: dict[str, tuple[str, ...]] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for name, raw in params.items():
        if name in known:
            continue
        if name.startswith(TAG_PARAM_PREFIX):
            key, tag_values = parse_tag_filter(name, raw)
            tags[key] = tag_values
            continue
        if name not in COLUMN_FILTERS:
            accepted = sorted({*known, *COLUMN_FILTERS, "tag.<key>"})
            raise bad_param(
                name, f"unknown query parameter {name!r}; accepted: {', '.join(accepted)}"
            )
        values = split_values(raw, name=name)
        if not values:
            continue
        _check_enum(name, values)
        columns[name] = tuple(values)
    return ReportFilters(start=start, end=end, columns=columns, tags=tags, principal=principal)


def _check_enum(name: str, values: list[str]) -> None:
    choices: tuple[str, ...] | None = None
    if name == "method":
        choices = tuple(m.value for m in Method)
    elif name == "status":
        choices = tuple(s.value for s in JobStatus)
    if choices is None:
        return
    bad = [v for v in values if v not in choices]
    if bad:
        raise bad_param(name, f"{name}: unknown value {bad[0]!r}; use one of {', '.join(choices)}")


@dataclass(frozen=True)
class Grouping:
    """How report rows are grouped: a job column, a tag key, each job, or nothing."""

    kind: str  # a GROUP_COLUMNS key, "tag", "job" or "none"
    tag_key: str | None = None

    @property
    def label(self) -> str:
        """The group_by value this came from."""
        return f"tag:{self.tag_key}" if self.kind == "tag" else self.kind


def parse_group_by(value: str | None, *, allow_job: bool = True) -> Grouping:
    """`method`, `gpu`, `model`, `provider`, `status`, `team`, `job` or `tag:<key>`."""
    if value is None or value == "":
        return Grouping("none")
    if value.startswith("tag:"):
        key = value.removeprefix("tag:")
        if not TAG_KEY.match(key):
            raise bad_param(
                "group_by", "group_by: tag:<key> needs a key of 1-100 of A-Z a-z 0-9 _ . -"
            )
        return Grouping("tag", key)
    if value in GROUP_COLUMNS or (value == "job" and allow_job):
        return Grouping(value)
    choices = [c for c in GROUP_CHOICES if allow_job or c != "job"]
    raise bad_param(
        "group_by", f"group_by: unknown grouping {value!r}; use one of {', '.join(choices)}"
    )


def describe(filters: ReportFilters) -> dict[str, Any]:
    """The applied filters as JSON, echoed back in every report."""
    return {
        "from": iso_z(filters.start) if filters.start else None,
        "to": iso_z(filters.end) if filters.end else None,
        **{name: list(values) for name, values in filters.columns.items()},
        **{f"tag.{key}": list(values) for key, values in filters.tags.items()},
    }
