"""Routes of /v1/budgets: budgets per team or tag and period, with their burn and forecast.

Reading takes a read key (the team's budgets); creating, changing and deleting take an admin key,
so a team's own submit keys cannot lift the budget that holds them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.auth.deps import AdminPrincipal, ReadPrincipal
from app.budgets import service
from app.budgets.schemas import BudgetIn, BudgetList, BudgetOut, BudgetPatch
from app.db import SessionDep

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])

BudgetId = Annotated[str, Path(max_length=40, description="the budget's id")]


@router.get("", response_model=BudgetList)
def list_budgets(session: SessionDep, principal: ReadPrincipal) -> BudgetList:
    """The team's budgets, each with its current period's burn and forecast."""
    budgets = service.list_(session, principal=principal)
    return BudgetList(items=[service.to_out(session, b) for b in budgets])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BudgetOut)
def create_budget(
    budget_in: BudgetIn, session: SessionDep, principal: AdminPrincipal, response: Response
) -> BudgetOut:
    """Add a budget: an amount per month, quarter or custom dates for the jobs of a team or tag.

    At each threshold (default 50, 80, 100%) of spent + accrued + committed a
    `budget.threshold_crossed` webhook event is sent once per period; with `action: refuse`,
    a job whose estimate would take the total past the amount is refused at submit (409).
    """
    budget = service.create(session, budget_in=budget_in, principal=principal)
    response.headers["Location"] = f"/v1/budgets/{budget.id}"
    return service.to_out(session, budget)


@router.get("/{budget_id}", response_model=BudgetOut)
def get_budget(budget_id: BudgetId, session: SessionDep, principal: ReadPrincipal) -> BudgetOut:
    """One budget with its burn: spent, accrued, committed, left, and the projection."""
    return service.to_out(session, service.get(session, budget_id=budget_id, principal=principal))


@router.patch("/{budget_id}", response_model=BudgetOut)
def update_budget(
    budget_id: BudgetId, patch: BudgetPatch, session: SessionDep, principal: AdminPrincipal
) -> BudgetOut:
    """Change a budget's name, amount, thresholds or action."""
    budget = service.update(session, budget_id=budget_id, patch=patch, principal=principal)
    return service.to_out(session, budget)


@router.delete("/{budget_id}", response_model=BudgetOut)
def delete_budget(budget_id: BudgetId, session: SessionDep, principal: AdminPrincipal) -> BudgetOut:
    """Remove a budget and the thresholds it recorded; answers what it was."""
    out = service.to_out(session, service.get(session, budget_id=budget_id, principal=principal))
    service.delete(session, budget_id=budget_id, principal=principal)
    return out
