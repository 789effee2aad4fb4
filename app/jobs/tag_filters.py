"""The one tag-filter syntax of the API: `tag.<key>=<value>` on jobs, reports and the export.

A parameter `tag.project=a,b` (or repeated) matches a job tagged `project` with any of the values;
several keys must all match. The route reads them from the raw query string (the key is part of
the parameter name, so no fixed parameter can declare it); the filter dependency of
app/jobs/filters.py documents the family once, with `TAG_FILTER_HELP`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from sqlalchemy import ColumnElement, exists, literal_column, select
from sqlalchemy.orm import aliased

from app.errors import bad_param
from app.models import Job, JobTag

TAG_PARAM_PREFIX = "tag."
TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")  # the job_tags.key alphabet and width
MAX_FILTER_VALUES = 100  # values of one filter; an IN list past this is a mistake, not a query
TAG_FILTER_HELP = (
    "tag.<key>=<value>: jobs tagged <key> with that value; repeat or comma-separate values "
    "(any matches), several keys must all match. Example: tag.project=search,ads"
)


def split_values(raw: Iterable[str], *, name: str) -> list[str]:
    """Repeated and comma-separated values of one parameter, blanks dropped, order kept."""
    out: list[str] = []
    for item in raw:
        if "\x00" in item:
            # PostgreSQL text cannot hold NUL; caught here, not mid-stream of an export.
            raise bad_param(name, f"{name}: a value may not contain a NUL character")
        out.extend(v.strip() for v in item.split(",") if v.strip())
    if len(out) > MAX_FILTER_VALUES:
        raise bad_param(name, f"{name}: at most {MAX_FILTER_VALUES} values")
    return list(dict.fromkeys(out))


def parse_tag_filter(name: str, raw: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """One `tag.<key>` parameter → (key, values); 422 naming it when malformed."""
    key = name.removeprefix(TAG_PARAM_PREFIX)
    if not TAG_KEY.match(key):
        raise bad_param(name, f"{name}: a tag key is 1-100 of A-Z a-z 0-9 _ . -")
    values = split_values(raw, name=name)
    if not values:
        raise bad_param(name, f"{name}: give at least one value")
    return key, tuple(values)


def query_lists(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """A request's query items as name -> every value given."""
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name, []).append(value)
    return out


def tag_clauses(tags: Mapping[str, tuple[str, ...]]) -> list[ColumnElement[bool]]:
    """WHERE clauses on `jobs` selecting jobs that match every tag filter."""
    out: list[ColumnElement[bool]] = []
    for key, values in tags.items():
        tag = aliased(JobTag)
        out.append(
            exists(
                select(literal_column("1"))
                .select_from(tag)
                .where(tag.job_id == Job.id, tag.key == key, tag.value.in_(values))
            )
        )
    return out
