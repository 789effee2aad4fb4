"""A period's spend projected to its end: what is known, plus the recent run rate for what is not.

projected = spent + accrued + committed + daily rate x days left, where the daily rate is what
jobs finishing in the last RATE_WINDOW_DAYS cost per day (whatever period they fell in): the run
rate stands for work not yet submitted, the committed part for work already queued or running.
The band (low, high) is the committed part's: each queued or running job's remaining estimate
at its estimate's low and high factors (app/estimator/intervals.py), calibrated where the
estimate was. Pure arithmetic over `Spend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.budgets.periods import Window, recent
from app.budgets.spend import Spend

# "Recent" is one week: long enough to hold a weekday/weekend cycle once, short enough to follow
# a change of pace within a month.
RATE_WINDOW_DAYS = 7.0


@dataclass(frozen=True)
class Projection:
    """Where a period's spend is heading (USD)."""

    daily_rate_usd: float
    rate_window_days: float
    days_elapsed: float
    days_left: float
    projected_usd: float
    projected_low_usd: float
    projected_high_usd: float


def rate_window(now: datetime) -> Window:
    """The window whose finished spend gives the daily run rate."""
    return recent(now, RATE_WINDOW_DAYS)


def project(spend: Spend, window: Window, now: datetime) -> Projection:
    """`spend` of `window`, seen at `now`, carried to the window's end."""
    rate = spend.recent_usd / RATE_WINDOW_DAYS
    left = window.days_after(now)
    known = spend.spent_usd + spend.accrued_usd + rate * left
    return Projection(
        daily_rate_usd=rate,
        rate_window_days=RATE_WINDOW_DAYS,
        days_elapsed=window.days_before(now),
        days_left=left,
        projected_usd=known + spend.committed_usd,
        projected_low_usd=known + spend.committed_low_usd,
        projected_high_usd=known + spend.committed_high_usd,
    )
