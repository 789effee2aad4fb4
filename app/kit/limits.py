"""The request gate: bounds headers, and bounds each body by its route with the key checked first.

A body is only ever read through the ASGI `receive` this gate hands on. At its first read the
request has been routed (`scope["route"]`), so the gate knows the route and decides there, never
from what the client says about its body: the upload limit applies only to routes marked
`@accepts_upload`, every other route gets the JSON limit whatever its Content-Type. Before
handing on the first byte it refuses a declared length past the limit (413) and, on a route
that needs a key, checks the key (401), so a client without a valid key never makes the server
hold any body at all. A streamed body is cut off with 413 as it passes the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    PROBLEM_JSON,
    AppError,
    PayloadTooLarge,
    RefusedBeforeBody,
    ServiceUnavailable,
)

# Total request header bytes we accept: browsers and proxies cap near 8-16 KiB per header and
# 64 KiB in all (nginx large_client_header_buffers 4x8k; Apache LimitRequestFieldSize 8190).
# uvicorn's httptools parser takes 200 KB headers as they are, so we bound them here.
MAX_HEADER_BYTES = 32 * 1024
# The multipart framing around an uploaded file: boundaries, part headers and the short form
# fields (app/datasets/upload.py caps them at 16 x 4 KiB).
MULTIPART_OVERHEAD_BYTES = 64 * 1024

_UPLOAD_MARK = "tunecost_accepts_upload"
PRINCIPAL_STATE = "principal"  # request.state attribute: the caller, once authenticated
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# The key check, given by app/auth (the kit imports no domain package): whether a route needs a
# key, and the caller behind a request's Authorization and X-API-Key headers (AppError if none).
NeedsKey = Callable[[APIRoute], bool]
Authenticate = Callable[[str | None, str | None], object]


def accepts_upload(endpoint: Endpoint) -> Endpoint:
    """Mark a route's endpoint as a file upload: its body may reach TUNECOST_MAX_UPLOAD_BYTES."""
    setattr(endpoint, _UPLOAD_MARK, True)
    return endpoint


@dataclass(frozen=True)
class RoutePolicy:
    """What the gate enforces on one route's body."""

    max_body: int
    is_upload: bool
    needs_key: bool


class RequestGate:
    """Header bound; per-route body limit and key check before the first byte of a body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        needs_key: NeedsKey,
        authenticate: Authenticate,
    ) -> None:
        self.app = app
        self.needs_key = needs_key
        self.authenticate = authenticate
        self.json_policy = RoutePolicy(max_body=max_body_bytes, is_upload=False, needs_key=False)
        self.max_upload = max_upload_bytes
        self._policies: dict[int, RoutePolicy] = {}

    def policy(self, route: object) -> RoutePolicy:
        """The policy of a routed request's route; anything but an API route gets the JSON one."""
        if not isinstance(route, APIRoute):
            return self.json_policy
        cached = self._policies.get(id(route))
        if cached is None:
            upload = bool(getattr(route.endpoint, _UPLOAD_MARK, False))
            cached = RoutePolicy(
                max_body=self.max_upload + MULTIPART_OVERHEAD_BYTES
                if upload
                else self.json_policy.max_body,
                is_upload=upload,
                needs_key=self.needs_key(route),
            )
            self._policies[id(route)] = cached
        return cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        if sum(len(k) + len(v) for k, v in raw_headers) > MAX_HEADER_BYTES:
            detail = f"the request headers exceed {MAX_HEADER_BYTES} bytes in all; send fewer"
            await send_problem(send, _HeadersTooLarge(detail))
            return
        headers = {k.lower(): v for k, v in raw_headers}
        checked: RoutePolicy | None = None
        seen = 0
        started = False

        async def gated_receive() -> Message:
            nonlocal checked, seen
            if checked is None:
                checked = await self._admit(scope, headers)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > checked.max_body:
                    raise RefusedBeforeBody(_too_large(checked))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, gated_receive, tracking_send)
        except RefusedBeforeBody as exc:  # raised where no handler rendered it
            if started:
                raise
            await send_problem(send, exc.error)

    async def _admit(self, scope: Scope, headers: dict[bytes, bytes]) -> RoutePolicy:
        """At the first read of the body: the route's policy, once its length and key pass."""
        policy = self.policy(scope.get("route"))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > policy.max_body:
            raise RefusedBeforeBody(_too_large(policy))
        state = scope.setdefault("state", {})
        if policy.needs_key and PRINCIPAL_STATE not in state:
            authorization = _text(headers.get(b"authorization"))
            x_api_key = _text(headers.get(b"x-api-key"))
            try:
                state[PRINCIPAL_STATE] = await run_in_threadpool(
                    self.authenticate, authorization, x_api_key
                )
            except AppError as exc:
                raise RefusedBeforeBody(exc) from None
            except OperationalError:
                down = ServiceUnavailable("the database cannot be reached; retry later")
                down.headers["Retry-After"] = "5"
                raise RefusedBeforeBody(down) from None
        return policy


class _HeadersTooLarge(AppError):
    status, title, slug = 431, "Request header fields too large", "request-header-fields-too-large"


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _too_large(policy: RoutePolicy) -> PayloadTooLarge:
    what = "upload" if policy.is_upload else "request body"
    setting = "TUNECOST_MAX_UPLOAD_BYTES" if policy.is_upload else "TUNECOST_MAX_BODY_BYTES"
    return PayloadTooLarge(
        f"the {what} exceeds {policy.max_body} bytes (set by {setting}); send less"
    )


async def send_problem(send: Send, error: AppError) -> None:
    """Answer with `error` as problem+json straight from ASGI (no handler has run)."""
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
