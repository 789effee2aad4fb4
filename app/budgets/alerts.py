"""Budget thresholds: each one a period's spend reaches is recorded once and announced once.

The spend compared is spent + accrued + committed, so a threshold is crossed as soon as a job is
submitted that takes the period there, not when its money is finally spent; jobs ending re-check
(a job can cost more than its estimate). A crossing is a row keyed by (budget, period start,
threshold) inserted with ON CONFLICT DO NOTHING: of two transactions that see it at once, one
inserts and announces, the other does nothing. The announcement is a `budget.threshold_crossed`
webhook event, sent after the transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.budgets import service
from app.budgets.guard import EPSILON_USD, Counted, matching
from app.budgets.periods import Window
from app.kit.instants import iso_z
from app.models import Budget, BudgetAlert, Job, JobTag
from app.webhooks.events import EventType, emit


def _insert(session: Session, values: dict[str, Any]) -> bool:
    """Insert an alert row unless it exists; whether this call inserted it."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(BudgetAlert).values(**values).on_conflict_do_nothing()
    # RETURNING says whether a row went in (an ORM session's INSERT may not report rowcount).
    return session.execute(stmt.returning(BudgetAlert.budget_id)).first() is not None


def record(
    session: Session, *, budget: Budget, window: Window, total_usd: float, now: datetime
) -> list[float]:
    """Record (and announce) each threshold `total_usd` reaches for the first time this period."""
    crossed = []
    for pct in sorted(budget.thresholds_pct):
        if total_usd + EPSILON_USD < budget.amount_usd * pct / 100.0:
            break
        row = {
            "budget_id": budget.id,
            "period_start": window.start,
            "threshold_pct": pct,
            "crossed_at": now,
            "spend_usd": total_usd,
        }
        if _insert(session, row):
            crossed.append(pct)
            emit(
                session,
                team=budget.team,
                key_id=None,
                type_=EventType.BUDGET_THRESHOLD_CROSSED,
                data=_data(budget, window, pct, total_usd),
            )
    return crossed


def _data(budget: Budget, window: Window, pct: float, total_usd: float) -> dict[str, Any]:
    return {
        "budget": {
            "id": budget.id,
            "name": budget.name,
            "tag_key": budget.tag_key,
            "tag_value": budget.tag_value,
            "period": str(budget.period),
            "period_start": iso_z(window.start),
            "period_end": iso_z(window.end),
            "amount_usd": budget.amount_usd,
            "action": str(budget.action),
        },
        "threshold_pct": pct,
        "spend_usd": total_usd,
        "left_usd": budget.amount_usd - total_usd,
    }


def after_submit(
    session: Session, *, counted: Iterable[Counted], added_usd: float, now: datetime
) -> None:
    """Thresholds the new job's commitment (`added_usd`) takes each counted budget past."""
    for c in counted:
        total = c.before.total_usd + added_usd
        record(session, budget=c.budget, window=c.window, total_usd=total, now=now)


def after_job_end(session: Session, *, job: Job, now: datetime) -> None:
    """Re-check the budgets an ended job counts against: its real cost may exceed its estimate."""
    if job.team is None:
        return
    tags = {t.key: t.value for t in session.scalars(select(JobTag).where(JobTag.job_id == job.id))}
    for budget in matching(session, team=job.team, tags=tags, now=now):
        span, got = service.spend(session, budget, now)
        record(session, budget=budget, window=span, total_usd=got.total_usd, now=now)
