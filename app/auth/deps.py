"""FastAPI dependencies that turn an Authorization header into a Principal with a scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from app.auth import service
from app.auth.service import Principal
from app.db import session_scope
from app.errors import Forbidden, Unauthorized
from app.kit.limits import PRINCIPAL_STATE
from app.models import Scope

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def secret_from(*, authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `X-API-Key`."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return x_api_key or None


def authenticate(secret: str | None) -> Principal:
    """The caller behind `secret`; Unauthorized when there is none or it is not a live key."""
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


async def _principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal:
    # The request gate (app/kit/limits.py) authenticates before any body is read; reuse its answer.
    # Async, so reusing it costs no trip through the thread pool; the lookup itself takes one.
    known = getattr(request.state, PRINCIPAL_STATE, None)
    if isinstance(known, Principal):
        return known
    principal = await run_in_threadpool(authenticate, bearer.credentials if bearer else header)
    setattr(request.state, PRINCIPAL_STATE, principal)  # the gate need not check it again
    return principal


def authenticate_headers(authorization: str | None, x_api_key: str | None) -> Principal:
    """The caller behind a request's Authorization / X-API-Key headers (the request gate's)."""
    return authenticate(secret_from(authorization=authorization, x_api_key=x_api_key))


def _maybe_principal(request: Request) -> Principal | None:
    """The caller when a live key is sent, else None: a missing or bad key gets the answer
    anyone gets (read from the headers here, so the route documents no key and no 401)."""
    secret = secret_from(
        authorization=request.headers.get("authorization"),
        x_api_key=request.headers.get("x-api-key"),
    )
    if not secret:
        return None
    try:
        return authenticate(secret)
    except Unauthorized:
        return None


def needs_key(route: APIRoute) -> bool:
    """Whether a route authenticates its caller with an API key."""
    return _depends_on_key(route.dependant)


def _depends_on_key(dependant: Dependant) -> bool:
    return any(d.call is _principal or _depends_on_key(d) for d in dependant.dependencies)


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits keys whose scope includes `scope`."""

    async def _check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        # Async: a comparison, not worth a trip through the thread pool.
        if not principal.scope.allows(scope):
            raise Forbidden(
                f"this route needs the '{scope.value}' scope; the key has '{principal.scope.value}'"
            )
        return principal

    return _check


# A route that answers anyone, and says more to a live key: None without one.
OptionalPrincipal = Annotated[Principal | None, Depends(_maybe_principal)]
ReadPrincipal = Annotated[Principal, Depends(require(Scope.READ))]
SubmitPrincipal = Annotated[Principal, Depends(require(Scope.SUBMIT))]
AdminPrincipal = Annotated[Principal, Depends(require(Scope.ADMIN))]
