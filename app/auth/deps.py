"""FastAPI dependencies that turn an Authorization header into a Principal with a scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.auth import service
from app.auth.service import Principal
from app.db import session_scope
from app.errors import Forbidden, Unauthorized
from app.models import Scope

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def _principal(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal:
    secret = bearer.credentials if bearer else header
    if not secret:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    # Its own short transaction, not the request's session: the connection goes back to the
    # pool before the handler reads a body, estimates or streams (the request's session only
    # takes one when the handler talks to the database). The use is recorded even when the
    # request itself then fails.
    with session_scope() as session:
        key = service.authenticate(session, secret=secret)
        if key is None:
            raise Unauthorized("the API key is unknown, revoked or expired")
        if service.is_last_use_stale(key):
            service.touch(session, key_id=key.id)
        return Principal(key_id=key.id, name=key.name, scope=Scope(key.scope), team=key.team)


def require(scope: Scope) -> Callable[..., Principal]:
    """A dependency that admits keys whose scope includes `scope`."""

    def _check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.scope.allows(scope):
            raise Forbidden(
                f"this route needs the '{scope.value}' scope; the key has '{principal.scope.value}'"
            )
        return principal

    return _check


ReadPrincipal = Annotated[Principal, Depends(require(Scope.READ))]
SubmitPrincipal = Annotated[Principal, Depends(require(Scope.SUBMIT))]
AdminPrincipal = Annotated[Principal, Depends(require(Scope.ADMIN))]
