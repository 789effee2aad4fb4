"""Keys, scopes, problem+json errors and body limits over real HTTP handling and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth import service
from app.db import session_scope
from app.models import ApiKey, Scope
from app.models.base import utcnow
from tests.conftest import auth

PROBLEM = "application/problem+json"


def _is_problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    result: dict[str, Any] = body
    return result


def test_health_needs_no_key_and_reports_the_database_to_a_key(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    r = app_client.get("/v1/health")
    assert r.status_code == 200
    assert r.json() in ({"status": "ok"}, {"status": "degraded"})  # nothing about hosts
    body = app_client.get("/v1/health", headers=auth(keys["read"])).json()
    assert body["database"]["ok"] is True
    assert body["schema_revision"] == body["database"]["revision"] is not None
    unknown = app_client.get("/v1/health", headers=auth("tc_nope_nope"))
    assert unknown.json() == r.json()  # a bad key is no key: the public answer


def test_missing_and_wrong_keys_get_401(app_client: TestClient) -> None:
    _is_problem(app_client.get("/v1/keys"), 401)
    _is_problem(app_client.get("/v1/keys", headers=auth("tc_nope_nope")), 401)


def test_scopes_are_enforced(app_client: TestClient, keys: dict[str, str]) -> None:
    body = _is_problem(app_client.get("/v1/keys", headers=auth(keys["read"])), 403)
    assert "admin" in body["detail"]
    _is_problem(app_client.get("/v1/keys", headers=auth(keys["submit"])), 403)
    assert app_client.get("/v1/keys", headers=auth(keys["admin"])).status_code == 200


def test_created_key_is_hashed_at_rest_works_and_revocation_stops_it(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    created = app_client.post("/v1/keys", json={"name": "dash", "scope": "read"}, headers=admin)
    assert created.status_code == 201, created.text
    secret, key_id = created.json()["secret"], created.json()["id"]
    with session_scope() as session:
        row = session.get(ApiKey, key_id)
        assert row is not None and secret not in (row.digest, row.prefix, row.name)
        assert row.digest == service.digest(secret)
    assert app_client.get("/v1/keys", headers=auth(secret)).status_code == 403  # read-only
    listed = app_client.get("/v1/keys", headers=admin).json()
    assert all("secret" not in k for k in listed)
    with session_scope() as session:
        stored = session.get(ApiKey, key_id)
        assert stored is not None and stored.last_used_at is not None
    assert app_client.post(f"/v1/keys/{key_id}/revoke", headers=admin).status_code == 200
    _is_problem(app_client.get("/v1/keys", headers=auth(secret)), 401)
    _is_problem(app_client.post("/v1/keys/key_missing/revoke", headers=admin), 404)


def test_expired_key_is_refused(app_client: TestClient) -> None:
    with session_scope() as session:
        _, secret = service.create(
            session, name="old", scope=Scope.ADMIN, expires_at=utcnow() - timedelta(seconds=1)
        )
    _is_problem(app_client.get("/v1/keys", headers=auth(secret)), 401)


def test_validation_errors_are_problem_json_with_field_paths(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    body = _is_problem(
        app_client.post("/v1/keys", json={"name": "x", "scope": "root"}, headers=admin), 422
    )
    assert body["errors"][0]["loc"] == ["body", "scope"]
    assert "scope" in body["detail"]
    body = _is_problem(
        app_client.post("/v1/keys", json={"name": "x", "scope": "read", "bogus": 1}, headers=admin),
        422,
    )
    assert body["errors"][0]["loc"][-1] == "bogus"


def test_malformed_json_is_422_not_500(app_client: TestClient, keys: dict[str, str]) -> None:
    r = app_client.post(
        "/v1/keys",
        content=b'{"name": "x", "scope": ',
        headers={**auth(keys["admin"]), "content-type": "application/json"},
    )
    _is_problem(r, 422)


def test_oversize_body_is_413_and_nothing_is_written(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    with session_scope() as session:
        before = len(session.scalars(select(ApiKey)).all())
    r = app_client.post(
        "/v1/keys",
        json={"name": "x" * 2_000_000, "scope": "read"},
        headers=auth(keys["admin"]),
    )
    _is_problem(r, 413)
    with session_scope() as session:
        assert len(session.scalars(select(ApiKey)).all()) == before


def test_unknown_route_is_problem_json(app_client: TestClient) -> None:
    _is_problem(app_client.get("/v1/nothing-here"), 404)
