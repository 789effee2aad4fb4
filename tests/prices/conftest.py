"""Fixtures of the price tests: an isolated database (its own catalog versions) with its keys."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def iso_keys(isolated_db: str) -> dict[str, str]:
    """One key per scope in the module's own database (team 'ml' for read and submit)."""
    from app.auth import service
    from app.db import session_scope
    from app.models import Scope

    out = {}
    with session_scope() as session:
        for scope in Scope:
            team = None if scope == Scope.ADMIN else "ml"
            _, secret = service.create(session, name=f"prices {scope}", scope=scope, team=team)
            out[scope.value] = secret
    return out
