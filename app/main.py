"""The FastAPI application factory: `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from app.auth.router import router as keys_router
from app.config import get_settings
from app.errors import install_error_handlers
from app.health.router import router as health_router
from app.limits import BodyLimitMiddleware

API_DESCRIPTION = """
Estimate what fine-tuning an open LLM will cost with full fine-tuning, LoRA or QLoRA; run it on
Celery GPU workers; and report the estimate next to what was really spent.

Authenticate with `Authorization: Bearer <api key>`. Scopes: `read` (estimates, catalog, reports),
`submit` (datasets, jobs), `admin` (prices, keys). Errors are RFC 9457 `application/problem+json`.
"""


def create_app() -> FastAPI:
    """Build the API: settings checked, routers mounted, every error as problem+json."""
    settings = get_settings()
    app = FastAPI(title="tunecost", version="0.1.0", description=API_DESCRIPTION)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    for router in (health_router, keys_router):
        app.include_router(router)
    return app
