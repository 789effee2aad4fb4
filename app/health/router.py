"""GET /v1/health: no key needed; 200 when the database is up, 503 problem+json when it is not.

Without a key it says only `ok` or `degraded`: worker host names, device counts, the broker and
the schema revision are for callers with a key (the CLI's `tunecost workers`, dashboards).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.auth.deps import OptionalPrincipal
from app.config import get_settings
from app.db import get_sessionmaker
from app.errors import ServiceUnavailable, problem_response
from app.health import service
from app.health.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/v1/health", response_model=None, responses={200: {"model": HealthOut}})
def health(principal: OptionalPrincipal) -> dict[str, Any] | JSONResponse:
    """Ok or degraded; with a key: database, broker, live workers, prices, schema revision."""
    settings = get_settings()
    session = get_sessionmaker()()
    try:
        db = service.database(session)
        workers = service.live_workers(session, settings)
        prices = service.prices(session, settings)
    except SQLAlchemyError as exc:
        err = ServiceUnavailable(f"the database cannot be reached ({type(exc).__name__})")
        return problem_response(503, err.body() | {"database": {"ok": False}})
    finally:
        session.close()
    # Stale prices make every dollar figure doubtful but nothing is down: degraded, still 200.
    status = "ok" if prices["ok"] else "degraded"
    if principal is None:
        return {"status": status}
    return {
        "status": status,
        "prices": prices,
        "database": db,
        "broker": service.broker(settings),
        "workers": workers,
        "schema_revision": db["revision"],
    }
