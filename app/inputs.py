"""Input types shared by routes: values checked against what Python and PostgreSQL can hold.

A bad value is refused by validation (422 naming the parameter) before it reaches the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

# PostgreSQL BIGINT, the type of every integer id and counter column we compare against.
MAX_BIGINT = 2**63 - 1


def to_utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime; naive means UTC. ValueError when UTC cannot hold it."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is in year 0 in UTC; 9999-12-31T23:00-01:00 is in year 10000.
        raise ValueError(
            "this instant is outside 0001-01-01..9999-12-31 in UTC; give a date within that range"
        ) from None


UtcDateTime = Annotated[datetime, AfterValidator(to_utc)]
