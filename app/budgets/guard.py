"""The submit-time budget check: a job that would cross a hard budget is refused, race-free.

Two submits that each fit a budget alone must not both pass when together they cross it. Before
measuring, the submit takes the lock of every hard budget the job counts against and keeps it
until its transaction ends, so the next submit measures with this job's commitment already in:

- PostgreSQL: `SELECT ... FOR UPDATE` on the budget rows, in id order (no deadlock between two
  submits that match the same budgets). Under READ COMMITTED each later statement sees what
  committed before it began, so once the lock is granted the spend includes the other job.
- SQLite (the embedded default): row locks do not exist; a write takes the one database write
  lock, held to the end of the transaction. The check writes to the budget rows first (an
  UPDATE that changes nothing), so it waits for any other writer, and everything it reads after
  that is the newest state, which no one else can change before it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.budgets import service
from app.budgets.periods import Window
from app.budgets.spend import Spend, expected_cost
from app.errors import Conflict
from app.kit.instants import iso_z
from app.models import Budget, BudgetAction

# Dollars below a cent are rounding, not spend: a job exactly filling a budget is allowed.
EPSILON_USD = 1e-6


@dataclass(frozen=True)
class Counted:
    """A budget a new job counts against, with its period and the spend before the job."""

    budget: Budget
    window: Window
    before: Spend


def matching(
    session: Session, *, team: str | None, tags: dict[str, str], now: datetime
) -> list[Budget]:
    """The team's budgets whose tag the job carries and whose period holds now."""
    if team is None:
        return []
    budgets = session.scalars(select(Budget).where(Budget.team == team).order_by(Budget.id))
    return [
        b
        for b in budgets
        if tags.get(b.tag_key) == b.tag_value and service.window(b, now).holds(now)
    ]


def lock(
    session: Session, *, team: str | None, tags: dict[str, str], now: datetime
) -> list[Budget]:
    """The budgets a new job counts against, the hard ones locked until the transaction ends."""
    budgets = matching(session, team=team, tags=tags, now=now)
    _lock(session, [b.id for b in budgets if b.action == BudgetAction.REFUSE])
    return budgets


def _lock(session: Session, budget_ids: list[str]) -> None:
    if not budget_ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(Budget.id).where(Budget.id.in_(budget_ids)).order_by(Budget.id).with_for_update()
        )
        return
    session.execute(
        update(Budget)
        .where(Budget.id.in_(budget_ids))
        .values(updated_at=Budget.updated_at)
        .execution_options(synchronize_session=False)
    )


def check(
    session: Session,
    *,
    budgets: list[Budget],
    est_cost_usd: float | None,
    max_cost_usd: float | None,
    now: datetime,
) -> list[Counted]:
    """Refuse the job (409) if it would take a hard budget past its amount; call after `lock`.

    Returns every budget the job counts against, for the threshold check once it is added.
    """
    commitment = expected_cost(est_cost_usd, max_cost_usd)
    counted = []
    for budget in budgets:
        span, before = service.spend(session, budget, now)
        left = budget.amount_usd - before.total_usd
        if budget.action == BudgetAction.REFUSE and commitment > left + EPSILON_USD:
            raise _refusal(budget, span, before, left, commitment, est_cost_usd, max_cost_usd)
        counted.append(Counted(budget, span, before))
    return counted


def _refusal(
    budget: Budget,
    span: Window,
    before: Spend,
    left: float,
    commitment: float,
    est_cost_usd: float | None,
    max_cost_usd: float | None,
) -> Conflict:
    return Conflict(
        f"budget {budget.name!r} ({budget.tag_key}={budget.tag_value}, {budget.period} from "
        f"{iso_z(span.start)}) has ${max(left, 0.0):.4f} left of ${budget.amount_usd:.4f}; "
        f"this job is estimated at ${commitment:.4f}. Raise the budget, lower max_cost_usd or "
        "max_steps, or wait for running jobs to end",
        extra={
            "budget": {
                "id": budget.id,
                "name": budget.name,
                "amount_usd": budget.amount_usd,
                "period_start": iso_z(span.start),
                "period_end": iso_z(span.end),
                "spent_usd": before.spent_usd,
                "accrued_usd": before.accrued_usd,
                "committed_usd": before.committed_usd,
                "left_usd": left,
            },
            "estimate": {
                "cost_usd": est_cost_usd,
                "max_cost_usd": max_cost_usd,
                "counted_usd": commitment,
            },
        },
    )
