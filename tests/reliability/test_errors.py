"""Every error is problem+json: unhandled ones (500 with a request id), extreme dates and ids."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app.jobs import service as jobs_service
from tests.conftest import auth

PROBLEM = "application/problem+json"
EXTREMES = {"from": "0001-01-01T00:00:00+01:00", "to": "9999-12-31T23:00:00-01:00"}
REPORT_ROUTES = ("/v1/reports/estimate-vs-actual", "/v1/reports/spend", "/v1/reports/focus")


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = dict(response.json())
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_an_unhandled_error_is_problem_json_500_with_a_logged_request_id(
    app_client: Any, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals /srv/tunecost/var")

    monkeypatch.setattr(jobs_service, "list_", broken)
    with caplog.at_level(logging.ERROR, logger="app.errors"):
        r = app_client.get("/v1/jobs", headers=auth(keys["read"]))
    body = _problem(r, 500)
    rid = body["request_id"]
    assert r.headers["x-request-id"] == rid
    assert "secret internals" not in r.text and "/srv" not in r.text
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log


def test_a_client_request_id_is_echoed(app_client: Any) -> None:
    r = app_client.get("/v1/health", headers={"X-Request-ID": "dash-1234abcd"})
    assert r.headers["x-request-id"] == "dash-1234abcd"
    r = app_client.get("/v1/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert r.headers["x-request-id"] != "bad id\twith tab"


@pytest.mark.parametrize("route", REPORT_ROUTES)
@pytest.mark.parametrize("param", sorted(EXTREMES))
def test_extreme_dates_on_every_report_route_are_422(
    app_client: Any, keys: dict[str, str], route: str, param: str
) -> None:
    r = app_client.get(route, params={param: EXTREMES[param]}, headers=auth(keys["read"]))
    body = _problem(r, 422)
    assert param in r.text and "9999-12-31" in body["detail"]


def test_extreme_split_at_of_the_calibration_evaluation_is_422(
    app_client: Any, keys: dict[str, str]
) -> None:
    r = app_client.get(
        "/v1/calibration/evaluation",
        params={"split_at": EXTREMES["from"]},
        headers=auth(keys["read"]),
    )
    assert "split_at" in _problem(r, 422)["detail"]


def test_plain_extreme_dates_that_utc_holds_still_work(
    app_client: Any, keys: dict[str, str]
) -> None:
    params = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z", "format": "json"}
    r = app_client.get(REPORT_ROUTES[0], params=params, headers=auth(keys["read"]))
    assert r.status_code == 200, r.text


def test_an_event_id_past_bigint_is_422_without_database_text(
    app_client: Any, keys: dict[str, str]
) -> None:
    r = app_client.get(
        "/v1/jobs/job_nope/events", params={"after": 2**63}, headers=auth(keys["read"])
    )
    body = _problem(r, 422)
    assert body["errors"][0]["loc"] == ["query", "after"]
    assert "bigint" not in r.text.lower() and "psycopg" not in r.text.lower()


def test_a_nul_character_in_an_id_is_4xx_without_database_text(
    app_client: Any, keys: dict[str, str]
) -> None:
    r = app_client.get("/v1/datasets/ds_%00x", headers=auth(keys["read"]))
    assert r.status_code == 422, r.text  # PostgreSQL text holds no NUL: refused, not looked up
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "0x00" not in r.text and "psycopg" not in r.text.lower()
