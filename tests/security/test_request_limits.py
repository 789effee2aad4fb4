"""Finding 1: a body is bounded by its route, and a request without a valid key is refused
before any of its body is read — measured on a real uvicorn server's memory."""

from __future__ import annotations

from tests.conftest import auth
from tests.live_api import LiveApi
from tests.security.wire import send_body

MB = 1024 * 1024
ATTACK_BYTES = 250 * MB  # what the attack sent per request
RSS_BUDGET = 50 * MB
ANSWER_WITHIN_S = 10.0  # liveness bound: the refusals below need no body at all
MULTIPART = {"Content-Type": "multipart/form-data; boundary=x"}
# The start of a well-formed file part: what follows is the file's content.
FILE_PART = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'


def test_no_key_with_an_upload_content_type_is_refused_before_the_body(
    live_api: LiveApi,
) -> None:
    before = live_api.rss_bytes()
    for declare_length in (False, True, False, True):
        answer = send_body(
            live_api.url,
            "/v1/keys",
            headers=MULTIPART,
            body_bytes=ATTACK_BYTES,
            declare_length=declare_length,
            prefix=FILE_PART,
        )
        # Declared: over the route's JSON limit, 413 before anything else. Chunked: no key, 401.
        assert answer.status == (413 if declare_length else 401), answer.text
        assert answer.body_sent < 8 * MB and answer.seconds < ANSWER_WITHIN_S, answer
        print(
            f"no key, {answer.status}: {answer.body_sent / MB:.1f} MB taken, {answer.seconds:.2f} s"
        )
    grown = live_api.rss_bytes() - before
    print(f"4 x {ATTACK_BYTES / MB:.0f} MB without a key: RSS growth {grown / MB:.1f} MB")
    assert grown < RSS_BUDGET


def test_an_unknown_key_is_refused_before_the_body(live_api: LiveApi) -> None:
    for path in ("/v1/keys", "/v1/datasets", "/v1/estimates"):
        answer = send_body(
            live_api.url,
            path,
            headers={**MULTIPART, **auth("tc_unknown_secret")},
            body_bytes=ATTACK_BYTES,
            declare_length=False,
            prefix=FILE_PART,
        )
        assert answer.status == 401, answer.text
        assert "application/problem+json" in answer.text
        assert answer.body_sent < 8 * MB and answer.seconds < ANSWER_WITHIN_S, answer


def test_a_json_route_keeps_the_json_limit_whatever_the_content_type(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    before = live_api.rss_bytes()
    for declare_length in (True, False):
        answer = send_body(
            live_api.url,
            "/v1/keys",
            headers={**MULTIPART, **auth(keys["admin"])},
            body_bytes=ATTACK_BYTES,
            declare_length=declare_length,
            prefix=FILE_PART,
        )
        assert answer.status == 413, answer.text
        assert "TUNECOST_MAX_BODY_BYTES" in answer.text
        assert answer.body_sent < 8 * MB and answer.seconds < ANSWER_WITHIN_S, answer
    grown = live_api.rss_bytes() - before
    print(
        f"multipart to JSON route: 413 at {answer.body_sent / MB:.1f} MB; RSS +{grown / MB:.1f} MB"
    )
    assert grown < RSS_BUDGET


def test_the_upload_route_takes_more_than_the_json_limit(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    with live_api.client(keys["submit"]) as client:
        line = b'{"text": "' + b"a" * 1000 + b'"}\n'
        body = line * (2 * MB // len(line))  # twice TUNECOST_MAX_BODY_BYTES
        r = client.post("/v1/datasets", files={"file": ("big.jsonl", body)})
    assert r.status_code == 201, r.text
