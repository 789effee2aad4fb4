"""The FastAPI application factory: `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from app.auth.deps import authenticate_headers, needs_key
from app.auth.router import quotas_router
from app.auth.router import router as keys_router
from app.budgets.router import router as budgets_router
from app.calibration.router import router as calibration_router
from app.catalog.prices.ratecard_router import router as ratecard_router
from app.catalog.prices.router import router as prices_router
from app.catalog.router import router as catalog_router
from app.config import get_settings
from app.datasets.router import router as datasets_router
from app.errors import PROBLEM_JSON, install_error_handlers
from app.estimates.router import router as estimates_router
from app.evals.router import router as evals_router
from app.health.metrics import install_metrics
from app.health.metrics import router as metrics_router
from app.health.router import router as health_router
from app.jobs.router import router as jobs_router
from app.kit.headers import SecurityHeadersMiddleware
from app.kit.limits import RequestGate
from app.kit.nul import refuse_nul
from app.kit.requestid import RequestIdMiddleware
from app.openapi_doc import document_routes, fill_success_schemas
from app.reports import rollups
from app.reports.router import router as reports_router
from app.studies import analysis as study_analysis
from app.studies.router import router as studies_router
from app.ui.router import install_ui
from app.webhooks.router import router as webhooks_router

API_DESCRIPTION = """
Estimate what fine-tuning an open LLM will cost with full fine-tuning, LoRA or QLoRA; run it on
Celery GPU workers; and report the estimate next to what was really spent.

Authenticate with `Authorization: Bearer <api key>` (or `X-API-Key: <api key>`).
A web console is at `/ui/`. Scopes: `read` (estimates, catalog, reports),
`submit` (datasets, jobs), `admin` (prices, keys). Errors are RFC 9457 `application/problem+json`.
"""


# Every job this process writes keeps the report rollups in the same transaction.
rollups.track()


def create_app() -> FastAPI:
    """Build the API: settings checked, routers mounted, every error as problem+json."""
    settings = get_settings()
    # /docs is served by install_ui from local assets (FastAPI's default loads a CDN); no ReDoc.
    app = FastAPI(
        title="tunecost",
        version="0.1.0",
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        # A NUL in the query, the path or a JSON body is a 422 naming where (app/kit/nul.py).
        dependencies=[Depends(refuse_nul)],
    )
    install_error_handlers(app)
    study_analysis.install()  # a study moves on when a pilot ends here (a cancel, a sweep)
    app.add_middleware(
        RequestGate,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        needs_key=needs_key,
        authenticate=authenticate_headers,
    )
    # Added last, so outermost of ours: even a 413 or 431 carries the id and the headers.
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    for router in (
        health_router,
        keys_router,
        quotas_router,
        catalog_router,
        prices_router,
        ratecard_router,
        datasets_router,
        estimates_router,
        jobs_router,
        evals_router,
        studies_router,
        reports_router,
        budgets_router,
        webhooks_router,
        calibration_router,
    ):
        # Each route gets its summary and only its own error codes (app/openapi_doc.py).
        document_routes(router.routes)
        app.include_router(router)
    document_routes(metrics_router.routes)
    install_metrics(app)
    install_ui(app)
    _document_problems_as_problem_json(app)
    return app


def _document_problems_as_problem_json(app: FastAPI) -> None:
    """FastAPI documents a response model as application/json; ours are problem+json only."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        fill_success_schemas(schema)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    if PROBLEM_JSON in content and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents replacing the schema builder this way
