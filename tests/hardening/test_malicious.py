"""Malicious inputs tried on purpose: each gets a clear 4xx and nothing is written.

Covered elsewhere, each by its own test: a model path outside the roots and a symlink pointing out
(tests/datasets/test_upload.py::test_model_paths_outside_the_roots_are_refused), a config with
`auto_map` and a gigantic config with vocab 1e12 (tests/estimates/test_estimates_bad_input.py),
a gzip bomb and an oversize upload (tests/datasets/test_upload.py). Here: one 500 MB line, SQL-ish
strings in tags and filters, and oversize headers against a real uvicorn server.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from app.db import session_scope
from app.models import Dataset, Job
from tests.conftest import auth
from tests.private_services import free_port
from tests.support import ROOT, ServiceEnv, wait_for

INJECTIONS = [
    "x'; DROP TABLE jobs; --",
    "' OR '1'='1",
    '" OR 1=1 --',
    "team) UNION SELECT * FROM api_keys --",
]


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


def test_a_500_mb_line_is_refused_by_line_number_and_nothing_is_stored(
    app_client: Any, keys: dict[str, str], service_env: ServiceEnv, tmp_path: Path
) -> None:
    bomb = tmp_path / "one-line.jsonl.gz"
    chunk = b"a" * (1 << 20)
    with gzip.open(bomb, "wb", compresslevel=1) as fh:
        fh.write(b'{"text": "')
        for _ in range(500):  # 500 MiB of one JSON string, a few hundred KB compressed
            fh.write(chunk)
        fh.write(b'"}\n{"text": "a normal line"}\n')
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Dataset))
    stored_before = sorted(service_env.storage_root.rglob("*"))
    with bomb.open("rb") as fh:
        r = app_client.post(
            "/v1/datasets",
            files={"file": (bomb.name, fh, "application/gzip")},
            headers=auth(keys["submit"]),
        )
    body = _problem(r, 422)
    assert "line 1" in body["detail"] and "line_too_long" in body["detail"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == before
    assert sorted(service_env.storage_root.rglob("*")) == stored_before


@pytest.mark.parametrize("value", INJECTIONS)
def test_sql_in_tag_filters_is_only_ever_data(
    app_client: Any, keys: dict[str, str], value: str
) -> None:
    read = auth(keys["read"])
    with session_scope() as session:
        jobs_before = session.scalar(select(func.count()).select_from(Job))
    report = app_client.get(
        "/v1/reports/estimate-vs-actual",
        params={"group_by": "method", "tag.team": value},
        headers=read,
    )
    assert report.status_code == 200, report.text
    assert report.json()["total"]["jobs"] == 0  # matched literally: no job has that team
    listed = app_client.get("/v1/jobs", params={"tag.team": value}, headers=read)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    spend = app_client.get(
        "/v1/reports/spend", params={"group_by": "tag:team", "team": value}, headers=read
    )
    assert spend.status_code == 200, spend.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
        assert session.execute(text("SELECT count(*) FROM api_keys")).scalar()


@pytest.mark.parametrize("value", INJECTIONS)
def test_sql_in_the_team_tag_of_a_job_is_refused_by_name(
    app_client: Any, keys: dict[str, str], value: str
) -> None:
    body = {
        "method": "lora",
        "model": {"path": "no-such-model"},
        "dataset_id": "ds_00000000000000000000000000000000",
        "hardware": {"gpu": "cpu"},
        "tags": {"team": value},
    }
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    r = app_client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))
    # A valid tag value, but not the key's team: refused before the model or dataset is looked at.
    problem = _problem(r, 422)
    assert problem["errors"][0]["loc"] == ["tags", "team"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before


def test_a_huge_authorization_header_is_401_problem_json(app_client: Any) -> None:
    r = app_client.get("/v1/keys", headers={"Authorization": "Bearer " + "k" * 8000})
    _problem(r, 401)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """uvicorn in a subprocess on its own SQLite database: headers are parsed by the real server."""
    from app.kit.migrate import upgrade_head

    tmp = tmp_path_factory.mktemp("server")
    url = f"sqlite:///{tmp / 'tc.db'}"
    upgrade_head(url)
    port = free_port()
    env = {
        **ServiceEnv(
            url, f"sqla+sqlite:///{tmp / 'b.db'}", tmp / "s", tmp / "m", tmp / "locks"
        ).variables(),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=120, what="uvicorn up")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_oversize_headers_get_a_4xx_from_the_real_server_and_it_stays_up(real_server: int) -> None:
    port = real_server
    huge = "x" * 200_000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n".encode())
        status_line = sock.recv(200).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 431"), status_line
    assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "path", ["0" * 300, "a/" + "b" * 256 + "/c", "é" * 200], ids=["300", "nested256", "400bytes"]
)
def test_a_path_name_longer_than_the_filesystem_takes_is_422(
    app_client: Any, keys: dict[str, str], path: str
) -> None:
    # Found by the fuzzer: Path.exists() raises ENAMETOOLONG for a name over 255 bytes (500).
    body = {"model": {"path": path}, "dataset": {"total_tokens": 1000}}
    r = app_client.post("/v1/estimates", json=body, headers=auth(keys["read"]))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "model.path" in r.text and "255 bytes" in r.text


NUL_FILTERS = [
    (route, param)
    for route in ("/v1/reports/focus", "/v1/reports/estimate-vs-actual", "/v1/reports/spend")
    for param in ("team", "tag.project")
] + [("/v1/jobs", "tag.project"), ("/v1/jobs", "gpu")]


@pytest.mark.parametrize(("route", "param"), NUL_FILTERS)
def test_a_nul_in_a_filter_value_is_422_before_any_query(
    app_client: Any, keys: dict[str, str], route: str, param: str
) -> None:
    # Found by the fuzzer: PostgreSQL refused the NUL inside a streamed export, after the 200.
    r = app_client.get(route, params={param: "a\x00b"}, headers=auth(keys["read"]))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
