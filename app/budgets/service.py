"""Budgets: create, read, change, delete, and each one's burn in its current period.

A budget belongs to one team (its tenant) and counts that team's jobs tagged
`tag_key=tag_value` (by default `team=<the team>`: all of them). Submit checks it
(app/budgets/guard.py); jobs ending re-check its thresholds (app/budgets/alerts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.budgets import periods
from app.budgets.forecast import project, rate_window
from app.budgets.schemas import AlertOut, BudgetIn, BudgetOut, BudgetPatch, BurnOut
from app.budgets.spend import Spend, measure
from app.errors import Conflict, InvalidInput, NotFound
from app.models import Budget, BudgetAlert, BudgetPeriod, Job, JobTag
from app.models.base import new_id, utcnow


def window(budget: Budget, now: datetime) -> periods.Window:
    """The budget's period that holds `now` (a custom budget: its own dates)."""
    if budget.period == BudgetPeriod.MONTH:
        return periods.month_of(now)
    if budget.period == BudgetPeriod.QUARTER:
        return periods.quarter_of(now)
    assert budget.starts_at is not None and budget.ends_at is not None  # BudgetIn requires them
    return periods.custom(budget.starts_at, budget.ends_at)


def selection(budget: Budget) -> list[ColumnElement[bool]]:
    """The jobs a budget counts: its team's, tagged `tag_key=tag_value`."""
    tagged = exists().where(
        JobTag.job_id == Job.id, JobTag.key == budget.tag_key, JobTag.value == budget.tag_value
    )
    return [Job.team == budget.team, tagged]


def spend(session: Session, budget: Budget, now: datetime) -> tuple[periods.Window, Spend]:
    """The budget's current period and its spend there (with the recent run rate)."""
    span = window(budget, now)
    got = measure(session, where=selection(budget), window=span, now=now, recent=rate_window(now))
    return span, got.get(None, Spend())


def _team(principal: Principal, team: str | None) -> str:
    if principal.is_admin:
        owner = team or principal.team
        if owner is None:
            raise InvalidInput("an admin key names the team the budget is for", field="team")
        return owner
    if principal.team is None:
        raise InvalidInput(
            "budgets belong to a team and this key has none; use a key of the team",
            field="team",
        )
    if team is not None and team != principal.team:
        raise InvalidInput(
            f"team is {team!r} but this key belongs to team {principal.team!r}", field="team"
        )
    return principal.team


def create(session: Session, *, budget_in: BudgetIn, principal: Principal) -> Budget:
    """Add a budget for the caller's team (an admin names the team)."""
    team = _team(principal, budget_in.team)
    budget = Budget(
        id=new_id("bud"),
        team=team,
        created_by_key_id=principal.key_id,
        name=budget_in.name,
        tag_key=budget_in.tag_key,
        tag_value=budget_in.tag_value or team,
        period=budget_in.period,
        starts_at=budget_in.starts_at,
        ends_at=budget_in.ends_at,
        amount_usd=budget_in.amount_usd,
        thresholds_pct=budget_in.thresholds_pct,
        action=budget_in.action,
    )
    try:
        with session.begin_nested():
            session.add(budget)
            session.flush()
    except IntegrityError:
        raise Conflict(f"team {team!r} already has a budget named {budget_in.name!r}") from None
    return budget


def _visible(principal: Principal) -> list[ColumnElement[bool]]:
    if principal.is_admin:
        return []
    return [Budget.team == principal.team] if principal.team is not None else [Budget.id.is_(None)]


def list_(session: Session, *, principal: Principal) -> Sequence[Budget]:
    """The caller's team's budgets (every team's for an admin), by team and name."""
    stmt = select(Budget).where(*_visible(principal)).order_by(Budget.team, Budget.name)
    return session.scalars(stmt).all()


def get(session: Session, *, budget_id: str, principal: Principal) -> Budget:
    """One budget the caller may see; 404 otherwise."""
    budget = session.get(Budget, budget_id)
    if budget is None or not (principal.is_admin or budget.team == principal.team):
        raise NotFound(f"no budget with id {budget_id!r}")
    return budget


def update(session: Session, *, budget_id: str, patch: BudgetPatch, principal: Principal) -> Budget:
    """Change a budget's name, amount, thresholds or action."""
    budget = get(session, budget_id=budget_id, principal=principal)
    for name, value in patch.model_dump(exclude_unset=True).items():
        if value is None:
            raise InvalidInput(f"{name} may be changed, not removed", field=name)
        setattr(budget, name, value)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"team {budget.team!r} already has a budget named {patch.name!r}") from None
    return budget


def delete(session: Session, *, budget_id: str, principal: Principal) -> None:
    """Remove a budget (its alerts go with it)."""
    session.delete(get(session, budget_id=budget_id, principal=principal))
    session.flush()


def burn(session: Session, budget: Budget, now: datetime | None = None) -> BurnOut:
    """The budget's current period: spend, projection and the thresholds already crossed."""
    now = now or utcnow()
    span, got = spend(session, budget, now)
    ahead = project(got, span, now)
    alerts = session.scalars(
        select(BudgetAlert)
        .where(BudgetAlert.budget_id == budget.id, BudgetAlert.period_start == span.start)
        .order_by(BudgetAlert.threshold_pct)
    ).all()
    return BurnOut(
        period_start=span.start,
        period_end=span.end,
        spent_usd=got.spent_usd,
        accrued_usd=got.accrued_usd,
        committed_usd=got.committed_usd,
        committed_low_usd=got.committed_low_usd,
        committed_high_usd=got.committed_high_usd,
        total_usd=got.total_usd,
        left_usd=budget.amount_usd - got.total_usd,
        used_pct=got.total_usd / budget.amount_usd * 100.0,
        finished_jobs=got.finished_jobs,
        active_jobs=got.active_jobs,
        daily_rate_usd=ahead.daily_rate_usd,
        projected_usd=ahead.projected_usd,
        projected_low_usd=ahead.projected_low_usd,
        projected_high_usd=ahead.projected_high_usd,
        days_left=ahead.days_left,
        alerts=[AlertOut.model_validate(a) for a in alerts],
    )


def to_out(session: Session, budget: Budget) -> BudgetOut:
    """The API view of a budget, with its burn."""
    return BudgetOut(
        id=budget.id,
        name=budget.name,
        team=budget.team,
        tag_key=budget.tag_key,
        tag_value=budget.tag_value,
        period=budget.period,
        starts_at=budget.starts_at,
        ends_at=budget.ends_at,
        amount_usd=budget.amount_usd,
        thresholds_pct=budget.thresholds_pct,
        action=budget.action,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
        burn=burn(session, budget),
    )
