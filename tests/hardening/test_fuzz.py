"""Property-based fuzzing of the whole OpenAPI schema: no 5xx, every error is problem+json, and
every documented response body matches its schema. `make fuzz` runs many more examples."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from app.auth import service
from app.db import session_scope
from app.main import create_app
from app.models import Scope

MAX_EXAMPLES = int(os.environ.get("TUNECOST_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def admin_header(isolated_db: str) -> dict[str, str]:
    with session_scope() as session:
        _, secret = service.create(session, name="fuzz", scope=Scope.ADMIN)
    return {"Authorization": f"Bearer {secret}"}


# The app reads its settings and database per request, so building it at import is safe: the
# isolated_db fixture points it at a fresh database before the first request.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


def _errors_are_problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        media = response.headers.get("content-type", [""])
        media = media[0] if isinstance(media, list) else media
        assert media.startswith("application/problem+json"), (
            f"{case.method} {case.path} -> {response.status_code} with {media!r}"
        )
        body = response.json()
        assert {"type", "title", "status", "detail"} <= body.keys(), body
    return None


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_500s_and_errors_are_problem_json(
    case: Any, admin_header: dict[str, str]
) -> None:
    response = case.call(headers=admin_header)
    case.validate_response(
        response,
        checks=[checks.not_a_server_error, checks.response_schema_conformance],
    )
    _errors_are_problem_json(None, response, case)
