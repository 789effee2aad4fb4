"""GET /v1/reports/forecast: a period's spend so far and where it is heading, per group.

The figures (spent, accrued, committed and its band) are app/budgets/spend.py's and the
projection app/budgets/forecast.py's, so a budget's burn and a forecast over the same jobs agree.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from app.auth.tenancy import visible
from app.budgets import periods
from app.budgets.forecast import Projection, project, rate_window
from app.budgets.spend import Spend, measure
from app.errors import bad_param
from app.jobs.filters import Grouping, ReportFilters, describe
from app.models import Job
from app.reports.schemas import ForecastPeriod, ForecastReport, ForecastRow, PeriodKind
from app.reports.service import group_source


def window_of(kind: PeriodKind, filters: ReportFilters, now: datetime) -> periods.Window:
    """The period asked for: the month or quarter holding now, or custom `from`/`to`."""
    if kind == "custom":
        if filters.start is None or filters.end is None:
            raise bad_param("from", "period=custom needs both from and to")
        return periods.custom(filters.start, filters.end)
    if filters.start is not None or filters.end is not None:
        raise bad_param("from", f"from and to set a custom period; drop them for period={kind}")
    return periods.month_of(now) if kind == "month" else periods.quarter_of(now)


def _row(group: Any, spend: Spend, ahead: Projection) -> ForecastRow:
    return ForecastRow(
        group=None if group is None else str(group),
        spent_usd=spend.spent_usd,
        accrued_usd=spend.accrued_usd,
        committed_usd=spend.committed_usd,
        committed_low_usd=spend.committed_low_usd,
        committed_high_usd=spend.committed_high_usd,
        finished_jobs=spend.finished_jobs,
        active_jobs=spend.active_jobs,
        daily_rate_usd=ahead.daily_rate_usd,
        projected_usd=ahead.projected_usd,
        projected_low_usd=ahead.projected_low_usd,
        projected_high_usd=ahead.projected_high_usd,
    )


def _sum(spends: list[Spend]) -> Spend:
    fields = [f.name for f in dataclasses.fields(Spend)]
    return Spend(**{name: sum(getattr(s, name) for s in spends) for name in fields})


def forecast(
    session: Session,
    *,
    filters: ReportFilters,
    grouping: Grouping,
    kind: PeriodKind,
    now: datetime,
) -> ForecastReport:
    """The period's spend per group and in total, projected to the period's end."""
    span = window_of(kind, filters, now)
    where: list[ColumnElement[bool]] = []
    if filters.principal is not None:
        where.append(
            visible(filters.principal, team=Job.team, created_by_key_id=Job.created_by_key_id)
        )
    # The window is the period's; the other filters select the jobs.
    where += dataclasses.replace(filters, start=None, end=None).selection()
    group, source = group_source(grouping) if grouping.kind != "none" else (None, None)
    spends = measure(
        session,
        where=where,
        window=span,
        now=now,
        group=group,
        source=source,
        recent=rate_window(now),
    )
    rows = [_row(g, s, project(s, span, now)) for g, s in spends.items()]
    rows.sort(key=lambda r: (r.group is None, r.group or ""))
    total = _sum(list(spends.values()))
    ahead = project(total, span, now)
    return ForecastReport(
        period=ForecastPeriod(kind=kind, start=span.start, end=span.end),
        as_of=now,
        days_elapsed=ahead.days_elapsed,
        days_left=ahead.days_left,
        rate_window_days=ahead.rate_window_days,
        group_by=grouping.label,
        filters=describe(filters),
        rows=rows,
        total=_row(None, total, ahead),
    )
