"""Budget periods: a UTC calendar month or quarter around an instant, or fixed dates.

Pure functions. A period is half-open, [start, end): a job belongs to the period it finished in
(as its FOCUS row's BillingPeriod does), and work still queued or running belongs to the period
that holds now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.kit.instants import as_utc

DAY_S = 86_400.0
MONTHS_PER_QUARTER = 3


@dataclass(frozen=True)
class Window:
    """A half-open span of time, [start, end), in UTC."""

    start: datetime
    end: datetime

    def holds(self, at: datetime) -> bool:
        """Whether `at` lies in the window."""
        return self.start <= as_utc(at) < self.end

    def days(self) -> float:
        """Its length in days."""
        return (self.end - self.start).total_seconds() / DAY_S

    def days_after(self, at: datetime) -> float:
        """Days of the window left after `at` (all of it before it starts, none after it ends)."""
        begin = max(as_utc(at), self.start)
        return max((self.end - begin).total_seconds(), 0.0) / DAY_S

    def days_before(self, at: datetime) -> float:
        """Days of the window already past at `at`."""
        stop = min(as_utc(at), self.end)
        return max((stop - self.start).total_seconds(), 0.0) / DAY_S


def _month_start(year: int, month: int) -> datetime:
    # Month arithmetic past December rolls into the next year.
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC)


def month_of(at: datetime) -> Window:
    """The UTC calendar month holding `at`."""
    at = as_utc(at)
    return Window(_month_start(at.year, at.month), _month_start(at.year, at.month + 1))


def quarter_of(at: datetime) -> Window:
    """The UTC calendar quarter (Jan-Mar, Apr-Jun, Jul-Sep, Oct-Dec) holding `at`."""
    at = as_utc(at)
    first = (at.month - 1) // MONTHS_PER_QUARTER * MONTHS_PER_QUARTER + 1
    start = _month_start(at.year, first)
    return Window(start, _month_start(at.year, first + MONTHS_PER_QUARTER))


def custom(start: datetime, end: datetime) -> Window:
    """Fixed dates, in UTC."""
    return Window(as_utc(start), as_utc(end))


def recent(at: datetime, days: float) -> Window:
    """The `days` days up to `at`."""
    at = as_utc(at)
    return Window(at - timedelta(days=days), at)
