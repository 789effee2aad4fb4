"""Keys of two teams (tenants) on the session's database, beside the `keys` of team 'ml'."""

from __future__ import annotations

import pytest

from app.auth import service
from app.db import session_scope
from app.models import Scope
from tests.support import ServiceEnv

TEAMS = ("alpha", "beta")


@pytest.fixture(scope="session")
def teams(service_env: ServiceEnv) -> dict[str, dict[str, str]]:
    """A read and a submit key per team of TEAMS: {team: {scope: secret}}."""
    out: dict[str, dict[str, str]] = {}
    with session_scope() as session:
        for team in TEAMS:
            out[team] = {
                scope.value: service.create(
                    session, name=f"security {team} {scope.value}", scope=scope, team=team
                )[1]
                for scope in (Scope.READ, Scope.SUBMIT)
            }
    return out
