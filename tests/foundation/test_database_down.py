"""With the database unreachable, health answers 503 problem+json and routes do not 500."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support import clear_caches


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def down_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(
        "TUNECOST_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x"
    )
    clear_caches()
    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client
    monkeypatch.undo()
    clear_caches()


def test_health_is_503_problem_json(down_client: TestClient) -> None:
    r = down_client.get("/v1/health")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["database"]["ok"] is False


def test_authenticated_route_is_503_not_500(down_client: TestClient) -> None:
    r = down_client.get("/v1/keys", headers={"Authorization": "Bearer tc_x_y"})
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
