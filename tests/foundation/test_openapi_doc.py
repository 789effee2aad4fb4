"""OpenAPI: a summary in words, a success schema and only the error codes each route can return.

The codes are cross-checked against requests that really produce them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.models import Scope
from tests.conftest import auth
from tests.hardening.test_access_matrix import ROUTES


@pytest.fixture(scope="module")
def spec(app_client: Any) -> dict[str, Any]:
    resp = app_client.get("/openapi.json")
    assert resp.status_code == 200
    return dict(resp.json())


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def _codes(spec: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(c) for c in spec["paths"][path][method.lower()]["responses"] if c[0] in "45"}


def test_every_route_has_a_summary_in_words_and_a_success_schema(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        summary = op["summary"]
        name_as_title = op["operationId"].split("_v1")[0].split("_metrics")[0]
        assert summary.lower() != name_as_title.replace("_", " "), (method, path, summary)
        assert len(summary.split()) >= 3 and "\n" not in summary, (method, path, summary)
        ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
        assert ok, (method, path)
        for code, response in ok.items():
            assert response.get("content"), (method, path, code)
            for media, content in response["content"].items():
                assert content.get("schema"), (method, path, code, media)


def test_error_codes_are_those_the_route_can_return(spec: dict[str, Any]) -> None:
    # A read route without parameters: no 403 (every key reads), 404, 409, 413 or 422.
    assert _codes(spec, "GET", "/v1/catalog/gpus") == {401, 431, 500, 503}
    assert _codes(spec, "POST", "/v1/jobs") == {401, 403, 409, 413, 422, 431, 500, 503}
    # An id in the path: 404, and 409 for a shortened id that starts several (app/kit/ids.py).
    assert _codes(spec, "GET", "/v1/jobs/{job_id}") == {401, 404, 409, 422, 431, 500, 503}
    assert 409 in _codes(spec, "POST", "/v1/keys/{key_id}/revoke")
    assert 409 not in _codes(spec, "GET", "/v1/catalog/models/{model_id}")
    assert _codes(spec, "GET", "/v1/health") == {431, 500, 503}
    assert all(429 not in _codes(spec, m, p) for m, p, _ in _operations(spec))
    problem = spec["paths"]["/v1/jobs"]["post"]["responses"]["409"]["content"]
    assert list(problem) == ["application/problem+json"]


def test_documented_codes_match_real_answers(
    app_client: Any, keys: dict[str, str], spec: dict[str, Any]
) -> None:
    real = [
        ("GET", "/v1/catalog/gpus", "/v1/catalog/gpus", None, 401),
        ("GET", "/v1/jobs/{job_id}", "/v1/jobs/job_nope", keys["read"], 404),
        ("POST", "/v1/jobs", "/v1/jobs", keys["read"], 403),
        ("GET", "/v1/jobs", "/v1/jobs?limit=0", keys["read"], 422),
        ("POST", "/v1/keys", "/v1/keys", keys["submit"], 403),
    ]
    for method, template, url, key, expected in real:
        resp = app_client.request(method, url, headers=auth(key) if key else {})
        assert resp.status_code == expected, (url, resp.text)
        assert expected in _codes(spec, method, template)
        assert re.match(r"application/problem\+json", resp.headers["content-type"])


def test_docs_page_loads_swagger_ui_from_the_api_itself(app_client: Any) -> None:
    html = app_client.get("/docs").text
    assert "/ui/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "https://" not in html.split("<body>")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert app_client.get(f"/ui/vendor/swagger-ui/{asset}").status_code == 200
    assert app_client.get("/redoc").status_code == 404  # no CDN-only page left behind


def test_auth_codes_match_the_access_matrix(spec: dict[str, Any]) -> None:
    # tests/hardening/test_access_matrix.py checks every route's real 401/403 for every caller.
    for method, path, needed, _ in ROUTES:
        codes = _codes(spec, method, path)
        assert (401 in codes) == (needed is not None), (method, path)
        assert (403 in codes) == (needed in (Scope.SUBMIT, Scope.ADMIN)), (method, path)
