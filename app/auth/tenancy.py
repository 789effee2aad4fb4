"""Tenancy: the key's team is the tenant; a key without a team is a tenant of its own.

Every dataset, estimate and job row carries the team and the key that made it. A caller sees a
row when it is an admin, when it has a team and the row belongs to that team, or when it has no
team and made the row itself. Rows of another tenant are answered exactly like rows that do not
exist (404, or the 422 of an unknown reference): their ids reveal nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, true
from sqlalchemy.orm import QueryableAttribute

from app.auth.service import Principal


def can_see(principal: Principal, *, team: str | None, created_by_key_id: str | None) -> bool:
    """Whether `principal` may see (and refer to) a row with this team and creator."""
    if principal.is_admin:
        return True
    if principal.team is not None:
        return team == principal.team
    return team is None and created_by_key_id == principal.key_id


def visible(
    principal: Principal,
    *,
    team: QueryableAttribute[str | None],
    created_by_key_id: QueryableAttribute[Any],
) -> ColumnElement[bool]:
    """The SQL condition `can_see` states, over a table's team and creator columns."""
    if principal.is_admin:
        return true()
    if principal.team is not None:
        return team == principal.team
    return and_(team.is_(None), created_by_key_id == principal.key_id)
