"""The one way an instant leaves the API: UTC, ISO 8601, with an explicit `Z` offset.

PostgreSQL hands back aware values; SQLite (the embedded default) hands back naive ones, which
tunecost always wrote in UTC. Either way a response field typed `UtcInstant` is converted to UTC
and written as `2025-03-10T12:00:00Z` (fractions of a second kept), never without an offset, so
a dashboard cannot read it as local time. The OpenAPI schema carries the same pattern.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

# What every instant in a response looks like (also published in the OpenAPI schema).
INSTANT_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive value is taken to be UTC already (as tunecost stores it)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


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
