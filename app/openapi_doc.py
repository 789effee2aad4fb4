"""OpenAPI that says what each route really does: a summary in words, the error codes it can
return (not every code on every route), and a schema for every success body.

Error codes follow from what a route takes: a key (401; 403 when it needs more than `read`, which
every key has), path ids (404), parameters or a body (422), a body (413). 500 and 503 (database
down) and 431 (oversized headers, app/kit/limits.py) can meet any route. 409 is declared by the few
routes that raise `Conflict`, listed here by their endpoint function, and by every route with an
id in its path (a shortened id that starts several ids: 409 Ambiguous id).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.routing import BaseRoute

from app.budgets.router import create_budget, update_budget
from app.catalog.router import set_price
from app.datasets.router import upload_dataset
from app.errors import PROBLEM_JSON, PROBLEM_RESPONSES, Problem
from app.evals.router import compare_jobs
from app.jobs.router import cancel_job, submit_job
from app.models import Scope
from app.reports.router import focus_export
from app.studies.router import run_candidate, submit_study
from app.webhooks.router import create_subscription

# Routes whose service raises Conflict: a concurrent price change; a job over budget (its own or
# a team's hard budget), that does not fit, or an Idempotency-Key reused with another body;
# cancelling a job that already ended; a budget name the team already uses; comparing a
# job that has no final evaluation yet; a create past the tenant's quota (app/auth/quotas.py:
# datasets, jobs, a study's pilots, webhook subscriptions).
CONFLICTING: frozenset[Callable[..., Any]] = frozenset(
    {
        set_price,
        submit_job,
        cancel_job,
        create_budget,
        update_budget,
        compare_jobs,
        upload_dataset,
        submit_study,
        run_candidate,
        create_subscription,
    }
)
# Path ids looked up by whole id or unique prefix (app/kit/ids.py): a prefix of several is a 409.
PREFIX_IDS = frozenset({"dataset_id", "estimate_id", "job_id", "key_id"})
ALWAYS = (431, 500, 503)
# JSON bodies streamed without a response model (app/reports/focus.py render_json).
STREAMED_JSON: dict[Callable[..., Any], dict[str, Any]] = {
    focus_export: {
        "type": "object",
        "required": ["focus_version", "rows"],
        "properties": {
            "focus_version": {"type": "string"},
            "rows": {"type": "array", "items": {"type": "object"}},
        },
    }
}
PROBLEM_DOCS: dict[int, dict[str, Any]] = {
    **{int(code): doc for code, doc in PROBLEM_RESPONSES.items()},
    431: {
        "model": Problem,
        "description": "Request headers over 32 KiB in all",
        "content": {PROBLEM_JSON: {}},
    },
}


def _walk(dependant: Dependant) -> list[Dependant]:
    """The route's dependant and every sub-dependency, depth first."""
    return [dependant, *(d for dep in dependant.dependencies for d in _walk(dep))]


def _required_scopes(dependant: Dependant) -> set[Scope]:
    """Scopes demanded by `app.auth.deps.require(...)` anywhere in the route's dependencies."""
    found: set[Scope] = set()
    for dep in dependant.dependencies:
        if dep.call is not None and getattr(dep.call, "__qualname__", "").startswith("require."):
            scope = inspect.getclosurevars(dep.call).nonlocals.get("scope")
            if isinstance(scope, Scope):
                found.add(scope)
        found |= _required_scopes(dep)
    return found


def error_codes(route: APIRoute) -> list[int]:
    """The problem+json status codes `route` can answer with."""
    parts = _walk(route.dependant)
    has_body = route.body_field is not None or "requestBody" in (route.openapi_extra or {})
    path_params = any(d.path_params for d in parts)
    params = path_params or any(d.query_params or d.header_params or d.cookie_params for d in parts)
    codes = set(ALWAYS)
    if any(isinstance(d.call, SecurityBase) for d in parts):
        codes.add(401)
    if _required_scopes(route.dependant) - {Scope.READ}:
        codes.add(403)
    if path_params:
        codes.add(404)
    if route.endpoint in CONFLICTING or any(
        p.name in PREFIX_IDS for d in parts for p in d.path_params
    ):
        codes.add(409)
    if has_body:
        codes.add(413)
    if has_body or params:
        codes.add(422)
    return sorted(codes)


def summary_of(route: APIRoute) -> str:
    """The docstring's first sentence, without its full stop: "Upload a JSONL dataset"."""
    doc = inspect.getdoc(route.endpoint) or route.name.replace("_", " ")
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def document_routes(routes: Iterable[BaseRoute]) -> None:
    """Give each API route its summary and its own error codes (idempotent)."""
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        if route.summary is None:
            route.summary = summary_of(route)
        kept = {c: r for c, r in route.responses.items() if int(c) not in PROBLEM_DOCS}
        if route.endpoint in STREAMED_JSON:
            for response in kept.values():
                json_body = response.get("content", {}).get("application/json")
                if json_body is not None:
                    json_body["schema"] = STREAMED_JSON[route.endpoint]
        route.responses = {**kept, **{c: PROBLEM_DOCS[c] for c in error_codes(route)}}


def fill_success_schemas(schema: dict[str, Any]) -> None:
    """A schema for success bodies documented by media type only (CSV, tar, Prometheus text)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                if not str(code).startswith("2"):
                    continue
                for media, content in response.get("content", {}).items():
                    if content.get("schema"):
                        continue
                    if media.startswith("text/"):
                        content["schema"] = {"type": "string"}
                    elif media.endswith("json"):
                        content["schema"] = {"type": "object"}
                    else:
                        content["schema"] = {"type": "string", "format": "binary"}
