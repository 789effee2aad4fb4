"""Findings 2, 7 and 8: a dataset upload's work is bounded and linear, and every refusal is a
4xx naming the line or the cap — on a real uvicorn server, its memory measured."""

from __future__ import annotations

import gzip
import io
import json
import time
from typing import Any

from app.config import get_settings
from app.datasets.formats import MAX_CHAT_MESSAGES, MAX_JSON_DEPTH
from tests.live_api import LiveApi

MB = 1024 * 1024
RSS_BUDGET = 50 * MB
ANSWER_WITHIN_S = 20.0  # liveness under attack on a shared machine; the attacks took 31-107 s


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as fh:
        fh.write(data)
    return out.getvalue()


def _upload(live_api: LiveApi, secret: str, name: str, content: bytes) -> tuple[Any, float]:
    start = time.monotonic()
    with live_api.client(secret) as client:
        r = client.post("/v1/datasets", files={"file": (name, content, "application/gzip")})
    return r, time.monotonic() - start


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


def test_a_chat_record_of_40000_messages_is_refused_at_once(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    turns = [{"role": "assistant", "content": "a"}] * 40_000
    bomb = _gzip(json.dumps({"messages": turns}).encode() + b"\n")
    assert len(bomb) < 8 * 1024  # the attack's 4.6 KB
    before = live_api.rss_bytes()
    r, seconds = _upload(live_api, keys["submit"], "chat.jsonl.gz", bomb)
    body = _problem(r, 422)
    assert body["bad_lines"][0]["line"] == 1
    assert body["bad_lines"][0]["reason"] == "too_many_messages"
    assert str(MAX_CHAT_MESSAGES) in body["detail"]
    grown = live_api.rss_bytes() - before
    print(f"40,000-message chat: 422 in {seconds:.2f} s, RSS +{grown / MB:.1f} MB")
    assert seconds < ANSWER_WITHIN_S
    assert grown < RSS_BUDGET


def test_the_longest_chat_accepted_is_rendered_in_linear_time(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    # At the cap, with long turns: the old renderer summed every earlier turn at each reply.
    turns = [
        {"role": "user" if i % 2 else "assistant", "content": "word " * 200}
        for i in range(MAX_CHAT_MESSAGES)
    ]
    data = _gzip(json.dumps({"messages": turns}).encode() + b"\n")
    r, seconds = _upload(live_api, keys["submit"], "long-chat.jsonl.gz", data)
    assert r.status_code == 201, r.text
    assert r.json()["num_examples"] == 1 and r.json()["format"] == "chat"
    print(f"{MAX_CHAT_MESSAGES}-message chat accepted in {seconds:.2f} s")
    assert seconds < ANSWER_WITHIN_S


def test_millions_of_tiny_lines_are_refused_by_the_line_cap(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    cap = get_settings().max_dataset_lines
    lines = 8 * cap  # the attack: 8M one-field lines in a 197 KiB gzip
    bomb = _gzip(b'{"text":"a"}\n' * lines)
    assert len(bomb) < 1 * MB
    before = live_api.rss_bytes()
    r, seconds = _upload(live_api, keys["submit"], "lines.jsonl.gz", bomb)
    body = _problem(r, 413)
    assert "TUNECOST_MAX_DATASET_LINES" in body["detail"] and str(cap) in body["detail"]
    grown = live_api.rss_bytes() - before
    print(
        f"{lines:,} lines ({len(bomb):,} B gzip): 413 in {seconds:.2f} s, RSS +{grown / MB:.1f} MB"
    )
    assert seconds < ANSWER_WITHIN_S
    assert grown < RSS_BUDGET


def test_a_line_nested_1000_deep_is_a_422_naming_the_line(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    deep = b'{"text": "ok"}\n' + b"[" * 1000 + b"]" * 1000 + b"\n"
    assert len(deep) < 2100  # the attack's 2 KB line
    deep_object = b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"\n"
    for content in (deep, b'{"text": "ok"}\n' + deep_object):
        with live_api.client(keys["submit"]) as client:
            r = client.post("/v1/datasets", files={"file": ("deep.jsonl", content)})
        body = _problem(r, 422)
        assert body["bad_lines"] == [
            {
                "line": 2,
                "reason": "too_deep",
                "detail": f"the JSON nests deeper than {MAX_JSON_DEPTH} levels",
            }
        ]
        assert "line 2" in body["detail"]
