"""Which jobs a report or the job list covers: a time window, job columns, tags; and grouping.

`ReportFiltersDep` is the one dependency of every route that filters jobs (the reports, the FOCUS
export, GET /v1/jobs): it declares each filter parameter once, with its documentation, and
validates them into a `ReportFilters` that turns into SQL `WHERE` clauses. A job belongs to a
window by its `finished_at` (the moment its cost is known); reports cover finished jobs only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import ColumnElement, and_

from app.auth.deps import ReadPrincipal
from app.auth.service import Principal
from app.auth.tenancy import visible
from app.errors import InvalidInput, bad_param
from app.estimator.spec import Method
from app.jobs.tag_filters import (
    TAG_FILTER_HELP,
    TAG_KEY,
    TAG_PARAM_PREFIX,
    parse_tag_filter,
    query_lists,
    split_values,
    tag_clauses,
)
from app.kit.instants import iso_z, query_instant
from app.models import Job, JobStatus

# The job columns a filter parameter or a `group_by` value names, by that name.
JOB_COLUMNS = {
    "method": Job.method,
    "gpu": Job.gpu,
    "model": Job.model_ref,
    "provider": Job.provider,
    "status": Job.status,
    "team": Job.team,
    "cost_source": Job.cost_source,
}
# Columns whose values are a closed set: a filter value outside it is refused, not matched.
CHOICES: dict[str, tuple[str, ...]] = {
    "method": tuple(m.value for m in Method),
    "status": tuple(s.value for s in JobStatus),
}
GROUP_CHOICES = (*JOB_COLUMNS, "job", "tag:<key>")
_ANY = "repeat the parameter or comma-separate values; any of them matches"


@dataclass(frozen=True)
class ReportFilters:
    """Jobs finished in [start, end) that match every column and tag filter given."""

    start: datetime | None = None
    end: datetime | None = None
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The caller: a report covers only its tenant's jobs (app/auth/tenancy.py); None = every job
    # (internal callers, never a request).
    principal: Principal | None = None

    def selection(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses of the filter parameters alone: window, columns, tags."""
        out: list[ColumnElement[bool]] = []
        if self.start is not None:
            out.append(Job.finished_at >= self.start)
        if self.end is not None:
            out.append(Job.finished_at < self.end)
        out.extend(JOB_COLUMNS[name].in_(values) for name, values in self.columns.items())
        out.extend(tag_clauses(self.tags))
        return out

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses of a report: finished jobs of the caller's tenant, selected."""
        out: list[ColumnElement[bool]] = [Job.finished_at.is_not(None)]
        if self.principal is not None:
            out.append(
                visible(self.principal, team=Job.team, created_by_key_id=Job.created_by_key_id)
            )
        return out + self.selection()

    def where(self) -> ColumnElement[bool]:
        """All of a report's clauses joined with AND."""
        return and_(*self.clauses())


def parse_filters(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    params: Mapping[str, Iterable[str]] | None = None,
    principal: Principal | None = None,
) -> ReportFilters:
    """Validate a window and filter parameters (`JOB_COLUMNS` names and `tag.<key>`).

    Each bad value, and each name that is not a filter, is a 422 naming its parameter.
    """
    start, end = query_instant(start, name="from"), query_instant(end, name="to")
    if start is not None and end is not None and start > end:
        raise bad_param("from", "from must not be later than to")
    columns: dict[str, tuple[str, ...]] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for name, raw in (params or {}).items():
        if name.startswith(TAG_PARAM_PREFIX):
            key, tag_values = parse_tag_filter(name, raw)
            tags[key] = tag_values
        elif name in JOB_COLUMNS:
            values = split_values(raw, name=name)
            _check_choices(name, values)
            if values:
                columns[name] = tuple(values)
        else:
            raise _unknown(name, JOB_COLUMNS)
    return ReportFilters(start=start, end=end, columns=columns, tags=tags, principal=principal)


def _check_choices(name: str, values: list[str]) -> None:
    choices = CHOICES.get(name)
    bad = [v for v in values if v not in choices] if choices else []
    if choices and bad:
        raise bad_param(name, f"{name}: unknown value {bad[0]!r}; use one of {', '.join(choices)}")


def _unknown(name: str, accepted: Iterable[str]) -> InvalidInput:
    if name == "tag":
        return bad_param("tag", "filter tags as tag.<key>=<value>, e.g. tag.team=ml")
    listed = ", ".join(sorted({*accepted, "tag.<key>"} - {name}))
    return bad_param(name, f"unknown query parameter {name!r}; accepted: {listed}")


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _declared(request: Request) -> set[str]:
    """The query parameters the matched route declares, its dependencies' included."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return set()
    return {p.alias for d in _dependants(route.dependant) for p in d.query_params}


def _choices_doc(name: str) -> str:
    return f"one of {', '.join(CHOICES[name])}; {_ANY}"


ListQ = Annotated[list[str] | None, Query(description=_ANY)]


def report_filters(
    request: Request,
    principal: ReadPrincipal,
    start: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="jobs finished at or after (ISO 8601 date or date-time, UTC unless an "
            "offset is given)",
        ),
    ] = None,
    to: Annotated[
        datetime | None, Query(description="jobs finished before (ISO 8601, exclusive)")
    ] = None,
    method: Annotated[list[str] | None, Query(description=_choices_doc("method"))] = None,
    gpu: ListQ = None,
    model: ListQ = None,
    provider: ListQ = None,
    status: Annotated[list[str] | None, Query(description=_choices_doc("status"))] = None,
    team: ListQ = None,
    cost_source: ListQ = None,
    # Documents the family of `tag.<key>` parameters; their values are read from the query,
    # as the key is part of each parameter's name.
    tag_doc: Annotated[
        str | None,
        Query(
            alias="tag.<key>",
            description=TAG_FILTER_HELP,
            openapi_examples={"two values": {"value": "search,ads"}},
        ),
    ] = None,
) -> ReportFilters:
    """The filters of a request; any query parameter its route does not declare is a 422."""
    query = query_lists(request.query_params.multi_items())
    declared = _declared(request)
    for name in query:
        if name not in declared and not name.startswith(TAG_PARAM_PREFIX):
            raise _unknown(name, declared - {"tag.<key>"})
    given = {
        "method": method,
        "gpu": gpu,
        "model": model,
        "provider": provider,
        "status": status,
        "team": team,
        "cost_source": cost_source,
    }
    params: dict[str, Iterable[str]] = {k: v for k, v in given.items() if v is not None}
    params.update((k, v) for k, v in query.items() if k.startswith(TAG_PARAM_PREFIX))
    return parse_filters(start=start, end=to, params=params, principal=principal)


ReportFiltersDep = Annotated[ReportFilters, Depends(report_filters)]


@dataclass(frozen=True)
class Grouping:
    """How report rows are grouped: a job column, a tag key, each job, or nothing."""

    kind: str  # a JOB_COLUMNS key, "tag", "job" or "none"
    tag_key: str | None = None

    @property
    def label(self) -> str:
        """The group_by value this came from."""
        return f"tag:{self.tag_key}" if self.kind == "tag" else self.kind


def parse_group_by(value: str | None, *, allow_job: bool = True) -> Grouping:
    """A `JOB_COLUMNS` name, `job` or `tag:<key>`; 422 naming `group_by` otherwise."""
    if value is None or value == "":
        return Grouping("none")
    if value.startswith("tag:"):
        key = value.removeprefix("tag:")
        if not TAG_KEY.match(key):
            raise bad_param(
                "group_by", "group_by: tag:<key> needs a key of 1-100 of A-Z a-z 0-9 _ . -"
            )
        return Grouping("tag", key)
    if value in JOB_COLUMNS or (value == "job" and allow_job):
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
