"""POST /v1/datasets over real HTTP handling, PostgreSQL and the storage folder."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.config import get_settings
from app.datasets.formats import RecordFormat, render_record
from app.db import session_scope
from app.models import Dataset
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth
from tests.support import ServiceEnv, clear_caches

PROBLEM = "application/problem+json"


def _upload(
    client: TestClient, secret: str, payload: bytes, *, filename: str = "d.jsonl", **fields: str
) -> httpx2.Response:
    files = {"file": (filename, io.BytesIO(payload), "application/octet-stream")}
    return client.post("/v1/datasets", files=files, data=fields, headers=auth(secret))


def _problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    result: dict[str, Any] = response.json()
    return result


def _rendered(path: Path) -> list[str]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return [render_record(json.loads(line)).text for line in raw.decode().splitlines() if line]


def _stored_files(storage_root: Path) -> set[Path]:
    return {p for p in storage_root.rglob("*") if p.is_file()}


def _row_count(team: str | None = None) -> int:
    """Dataset rows: all of them, or those of `team`."""
    stmt = select(func.count()).select_from(Dataset)
    if team is not None:
        stmt = stmt.where(Dataset.team == team)
    with session_scope() as session:
        return int(session.scalar(stmt) or 0)


def _nearest_rank(ordered: list[int], q: float) -> int:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@pytest.fixture(scope="module")
def tiny_model(service_env: ServiceEnv) -> Path:
    """A tiny Llama with a trained tokenizer under the model root."""
    return make_tiny_model(service_env.model_root / "tiny", hidden_size=32, heads=4, kv_heads=2)


@pytest.mark.parametrize("fmt", list(RecordFormat))
def test_each_format_is_detected_and_counted(
    app_client: TestClient, keys: dict[str, str], tmp_path: Path, fmt: RecordFormat
) -> None:
    path = make_tiny_dataset(tmp_path / "d.jsonl", n=40, fmt=fmt, seed=3)
    r = _upload(app_client, keys["submit"], path.read_bytes(), name=f"tiny {fmt}")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == fmt.value and body["formats"] == {fmt.value: 40}
    assert body["name"] == f"tiny {fmt}" and body["compressed"] is False
    # The documented approximation, counted here independently of the service.
    counts = sorted(max(1, math.ceil(len(t) / 4)) for t in _rendered(path))
    stats = body["stats"]
    assert stats["tokenizer"] == body["tokenizer"] == "approximate"
    assert "4" in stats["tokenizer_note"]
    assert body["num_examples"] == stats["examples"] == 40
    assert body["total_tokens"] == stats["total_tokens"] == sum(counts)
    assert stats["max_tokens"] == counts[-1] and stats["min_tokens"] == counts[0]
    assert stats["p50_tokens"] == _nearest_rank(counts, 0.5)
    assert stats["p95_tokens"] == _nearest_rank(counts, 0.95)
    assert stats["mean_tokens"] == pytest.approx(sum(counts) / 40)
    # The key under the storage root: clients see no server path.
    stored = Path(get_settings().storage_root) / body["storage_path"]
    assert stored.read_bytes() == path.read_bytes()
    assert body["size_bytes"] == path.stat().st_size
    import hashlib

    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert app_client.get(f"/v1/datasets/{body['id']}", headers=auth(keys["read"])).json() == body


def test_gzipped_jsonl_gives_the_same_statistics(
    app_client: TestClient, keys: dict[str, str], tmp_path: Path
) -> None:
    plain = make_tiny_dataset(tmp_path / "d.jsonl", n=60, fmt="chat", seed=5)
    packed = make_tiny_dataset(tmp_path / "d.jsonl.gz", n=60, fmt="chat", seed=5)
    a = _upload(app_client, keys["submit"], plain.read_bytes()).json()
    r = _upload(app_client, keys["submit"], packed.read_bytes(), filename="d.jsonl.gz")
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["compressed"] is True and a["compressed"] is False
    assert b["stats"] == a["stats"]
    assert b["uncompressed_bytes"] == plain.stat().st_size > b["size_bytes"]
    assert b["storage_path"].endswith(".jsonl.gz")


def test_token_statistics_use_the_local_tokenizer(
    app_client: TestClient, keys: dict[str, str], tmp_path: Path, tiny_model: Path
) -> None:
    from transformers import AutoTokenizer

    path = make_tiny_dataset(tmp_path / "d.jsonl", n=80, fmt="alpaca", seed=11)
    r = _upload(app_client, keys["submit"], path.read_bytes(), model_path="tiny")
    assert r.status_code == 201, r.text
    stats = r.json()["stats"]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    counts = sorted(len(tok(text).input_ids) for text in _rendered(path))
    assert stats["tokenizer"] == r.json()["tokenizer"] == "tiny"
    assert stats["tokenizer_note"] is None
    assert stats["total_tokens"] == sum(counts)
    assert (stats["max_tokens"], stats["min_tokens"]) == (counts[-1], counts[0])
    assert stats["p50_tokens"] == _nearest_rank(counts, 0.5)
    assert stats["p95_tokens"] == _nearest_rank(counts, 0.95)
    # The trained BPE really differs from the characters/4 rule, so the counter mattered.
    approx = _upload(app_client, keys["submit"], path.read_bytes()).json()["stats"]
    assert approx["total_tokens"] != stats["total_tokens"]
    # The absolute path under the root works too.
    again = _upload(app_client, keys["submit"], path.read_bytes(), model_path=str(tiny_model))
    assert again.json()["stats"]["total_tokens"] == sum(counts)


def test_bad_lines_are_named_and_nothing_is_stored(
    app_client: TestClient, keys: dict[str, str], service_env: ServiceEnv
) -> None:
    lines = [
        json.dumps({"text": "fine"}),
        "{not json",
        json.dumps({"text": "fine too"}),
        json.dumps({"question": "what?", "answer": "that"}),
        "",
        json.dumps({"prompt": "Q:", "completion": "   "}),
        json.dumps({"messages": []}),
    ]
    before_files, before_rows = _stored_files(service_env.storage_root), _row_count()
    body = _problem(_upload(app_client, keys["submit"], "\n".join(lines).encode()), 422)
    bad = {b["line"]: b["reason"] for b in body["bad_lines"]}
    assert bad == {2: "not_json", 4: "unknown_format", 6: "empty_text", 7: "unknown_format"}
    assert body["bad_line_count"] == 4
    # One clause per kind of problem: its count, its first lines, one detail and a hint.
    assert "4 bad line(s) of 6, nothing was stored" in body["detail"]
    assert "unknown_format: 2 lines, e.g. lines 4, 7: no known format" in body["detail"]
    assert "not_json: 1 line, e.g. line 2: invalid JSON" in body["detail"]
    problems = {p["kind"]: p for p in body["problems"]}
    assert problems["unknown_format"]["rows"] == [4, 7] and problems["empty_text"]["count"] == 1
    assert "columns=prompt=question,completion=answer" in problems["unknown_format"]["hint"]
    assert body["errors"][0]["loc"] == ["file"]
    assert _stored_files(service_env.storage_root) == before_files
    assert _row_count() == before_rows


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [(b"", "no examples"), (b"\n\n  \n", "no examples"), (gzip.compress(b"x" * 500)[:-8], "gzip")],
)
def test_empty_and_damaged_files_are_refused(
    app_client: TestClient, keys: dict[str, str], payload: bytes, fragment: str
) -> None:
    body = _problem(_upload(app_client, keys["submit"], payload), 422)
    assert fragment in body["detail"]


def test_upload_needs_submit_scope_and_a_file_part(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    line = json.dumps({"text": "hello"}).encode()
    _problem(_upload(app_client, keys["read"], line), 403)
    _problem(app_client.post("/v1/datasets", files={"x": ("a", b"1")}), 401)
    r = app_client.post(
        "/v1/datasets",
        data={"name": "nofile"},
        files={"other": ("a.txt", b"1")},
        headers=auth(keys["submit"]),
    )
    assert "file" in _problem(r, 422)["detail"]
    r = app_client.post("/v1/datasets", json={"text": "x"}, headers=auth(keys["submit"]))
    assert "multipart" in _problem(r, 422)["detail"]


def test_model_paths_outside_the_roots_are_refused(
    app_client: TestClient,
    keys: dict[str, str],
    service_env: ServiceEnv,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    line = json.dumps({"text": "hello there"}).encode()
    outside = make_tiny_model(tmp_path / "outside", hidden_size=32, heads=4, kv_heads=2)
    link = service_env.model_root / "sneaky"
    os.symlink(outside, link)
    before_files, before_rows = _stored_files(service_env.storage_root), _row_count()
    for path in ("../../etc", "/etc", str(outside), "sneaky", str(link), "tiny/../../outside"):
        body = _problem(_upload(app_client, keys["submit"], line, model_path=path), 403)
        assert "outside" in body["detail"]
    assert (
        "not a model folder"
        in _problem(_upload(app_client, keys["submit"], line, model_path="missing"), 422)["detail"]
    )
    _problem(_upload(app_client, keys["submit"], line, model_path="tiny/config.json"), 422)
    assert _stored_files(service_env.storage_root) == before_files
    assert _row_count() == before_rows


def test_get_unknown_and_cursor_pagination(app_client: TestClient, keys: dict[str, str]) -> None:
    read = auth(keys["read"])
    _problem(app_client.get("/v1/datasets/ds_nope", headers=read), 404)
    made = [
        _upload(app_client, keys["submit"], json.dumps({"text": f"n{i}"}).encode()).json()["id"]
        for i in range(3)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = app_client.get("/v1/datasets", params=params, headers=read).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:3] == made[::-1]  # newest first
    # Every dataset of the key's team, once (other tests' teams have theirs too).
    assert len(seen) == len(set(seen)) == _row_count(team="ml")
    _problem(app_client.get("/v1/datasets", params={"cursor": "garbage!"}, headers=read), 422)
    _problem(app_client.get("/v1/datasets", params={"limit": 101}, headers=read), 422)


@pytest.fixture
def small_limit_client(service_env: ServiceEnv) -> Iterator[object]:
    """A second app whose upload limit is 4 KiB."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    os.environ["TUNECOST_MAX_UPLOAD_BYTES"] = "4096"
    clear_caches()
    try:
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            yield client
    finally:
        os.environ.pop("TUNECOST_MAX_UPLOAD_BYTES")
        clear_caches()


def test_oversize_uploads_and_gzip_bombs_get_413(
    small_limit_client: TestClient, keys: dict[str, str], service_env: ServiceEnv
) -> None:
    before_files, before_rows = _stored_files(service_env.storage_root), _row_count()
    big = (json.dumps({"text": "x" * 100}) + "\n").encode() * 100  # ~11 KiB > 4 KiB
    body = _problem(_upload(small_limit_client, keys["submit"], big), 413)
    assert "4096" in body["detail"]
    # Under the limit compressed, far over it decompressed (one line with no newline).
    bomb = gzip.compress(b'{"text": "' + b"a" * 2_000_000)
    assert len(bomb) < 4096
    body = _problem(_upload(small_limit_client, keys["submit"], bomb), 413)
    assert "decompress" in body["detail"]
    assert _stored_files(service_env.storage_root) == before_files
    assert _row_count() == before_rows


def test_a_stored_file_is_removed_when_the_transaction_ends_as_told(
    service_env: ServiceEnv, tmp_path: Path
) -> None:
    """A new upload's file goes if its transaction rolls back, a deleted dataset's file if its
    transaction commits; each is kept when the transaction ends the other way."""
    from app.datasets.service import _remove_after
    from app.kit.storage import put_file

    local = tmp_path / "x.jsonl"
    local.write_text('{"text": "kept?"}\n')
    for told in ("rollback", "commit"):
        for ended in ("rollback", "commit"):
            url = put_file(local, f"datasets/test-{told}-{ended}/data.jsonl")
            stored = Path(url.removeprefix("file://"))
            assert stored.is_file()
            with session_scope() as session:
                session.execute(select(1))  # a real transaction to end
                _remove_after(session, url, outcome=told)
                if ended == "rollback":
                    session.rollback()
            assert stored.exists() is (told != ended), (told, ended)
