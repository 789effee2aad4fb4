"""Typed application errors, all rendered as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://tunecost.dev/problems/"
REQUEST_ID_HEADER = "X-Request-ID"


class FieldError(BaseModel):
    """Where a request was invalid and why."""

    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error response carries."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None


def _problem_doc(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}


# Documented on every authenticated route so the OpenAPI matches what clients really get.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem_doc("Missing, unknown, revoked or expired API key"),
    403: _problem_doc("The key lacks the scope this route needs"),
    404: _problem_doc("No such resource"),
    409: _problem_doc("Conflicts with the current state"),
    413: _problem_doc("Body over the configured limit"),
    422: _problem_doc("Invalid request; `errors` lists the fields"),
    429: _problem_doc("Too many requests of this kind at once; retry after Retry-After"),
    500: _problem_doc("An unexpected server error; `request_id` names it in the server's log"),
    503: _problem_doc("The database is unreachable or the server is full; retry later"),
}


class AppError(Exception):
    """Base of every error a client can cause or should see; carries its HTTP status."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        """The problem+json document for this error."""
        return {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class AmbiguousId(AppError):
    """A shortened id that starts several ids the caller may see; `matches` names some."""

    status, title, slug = 409, "Ambiguous id", "ambiguous-id"

    def __init__(self, detail: str, *, matches: list[str]) -> None:
        super().__init__(detail, extra={"matches": matches})


class PayloadTooLarge(AppError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class InvalidInput(AppError):
    """A semantically invalid request; `field` names where, `errors` follows the 422 shape."""

    status, title, slug = 422, "Invalid request", "invalid-request"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        errors = [{"loc": field.split("."), "msg": detail, "type": "value_error"}] if field else []
        super().__init__(detail, extra={"errors": errors, **extra})


def bad_param(name: str, detail: str) -> InvalidInput:
    """A 422 naming query parameter `name` (which may itself contain dots, e.g. tag.team)."""
    return InvalidInput(
        detail, errors=[{"loc": ["query", name], "msg": detail, "type": "value_error"}]
    )


class ServiceUnavailable(AppError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"


class TooManyRequests(AppError):
    status, title, slug = 429, "Too many requests", "too-many-requests"


class RefusedBeforeBody(StarletteHTTPException):
    """An AppError raised from ASGI `receive` (app/kit/limits.py), where only an HTTPException
    passes FastAPI's body reading unchanged."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.status, error.detail, error.headers or None)
        self.error = error


def request_id(request: Request) -> str:
    """The id of this request (set by RequestIdMiddleware); a fresh one if it did not run."""
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else uuid.uuid4().hex


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSONResponse with the problem+json media type."""
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        out.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Render every error — ours, HTTP, validation, database down — as problem+json."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RefusedBeforeBody)
    async def _refused(_: Request, exc: RefusedBeforeBody) -> JSONResponse:
        return problem_response(exc.error.status, exc.error.body(), exc.error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "header"))
        detail = f"{where}: {first['msg']}" if where else first["msg"]
        body = {
            "type": PROBLEM_BASE + "validation-error",
            "title": "Request validation failed",
            "status": 422,
            "detail": detail,
            "errors": errors,
        }
        return problem_response(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": str(exc.detail) if exc.status_code < 500 else "Server error",
            "status": exc.status_code,
            "detail": str(exc.detail),
        }
        return problem_response(exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # e.g. a NUL character in text, or a number past the column's range: the client's input.
        # The database's own words stay in the log: they name tables, columns and SQL.
        rid = request_id(request)
        log.warning("request %s: value refused by the database: %s", rid, exc.orig)
        body = InvalidInput(
            "a value in the request is outside what can be stored (too long, out of range or "
            "holding a NUL character); check the values sent",
            request_id=rid,
        ).body()
        return problem_response(422, body)

    @app.exception_handler(IntegrityError)
    async def _conflict(_: Request, exc: IntegrityError) -> JSONResponse:
        body = Conflict("the request conflicts with existing data; nothing was written").body()
        return problem_response(409, body)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        body = ServiceUnavailable(
            "the database cannot be reached; nothing was written, retry later"
        ).body()
        return problem_response(503, body, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's outermost middleware calls this for anything no other handler took; the
        # traceback is logged under the request id the client sees, never sent to the client.
        rid = request_id(request)
        log.error("request %s %s %s failed", rid, request.method, request.url.path, exc_info=exc)
        body = {
            "type": PROBLEM_BASE + "internal-error",
            "title": "Internal server error",
            "status": 500,
            "detail": f"an unexpected error occurred; report request id {rid}",
            "request_id": rid,
        }
        return problem_response(500, body, {REQUEST_ID_HEADER: rid})
