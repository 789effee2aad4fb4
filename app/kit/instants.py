"""Instants in and out of the API: one `as_utc`, UTC on the way in, `Z` on the way out.

PostgreSQL hands back aware values; SQLite (the embedded default) hands back naive ones, which
tunecost always wrote in UTC. Either way a response field typed `UtcInstant` is converted to UTC
and written as `2025-03-10T12:00:00Z` (fractions of a second kept), never without an offset, so
a dashboard cannot read it as local time. The OpenAPI schema carries the same pattern.

An instant given by a client (`query_instant`) is converted the same way; one that UTC cannot
hold is a 422 naming the parameter, before it reaches the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

from app.errors import bad_param

# What every instant in a response looks like (also published in the OpenAPI schema).
INSTANT_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; naive is taken to be UTC already (as tunecost stores it).

    ValueError when UTC cannot hold it.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is in year 0 in UTC; 9999-12-31T23:00-01:00 is in year 10000.
        raise ValueError(
            "this instant is outside 0001-01-01..9999-12-31 in UTC; give a date within that range"
        ) from None


def query_instant(value: datetime | None, *, name: str) -> datetime | None:
    """Query parameter `name` in UTC; a 422 naming it when UTC cannot hold it."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except ValueError as exc:
        raise bad_param(name, f"{name}: {exc}") from None


def iso_z(value: datetime) -> str:
    """ISO 8601 text of `value` in UTC, ending in `Z`."""
    text = as_utc(value).replace(tzinfo=None).isoformat()
    return text + "Z"


UtcInstant = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(iso_z, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": INSTANT_PATTERN,
            "description": "UTC, ISO 8601 with a Z offset",
        },
        mode="serialization",
    ),
]
