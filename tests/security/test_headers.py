"""Finding 10: security headers on every page and answer, no server banner, and /v1/health
tells a caller without a key nothing but ok or degraded — on a real uvicorn server."""

from __future__ import annotations

import httpx

from tests.conftest import auth
from tests.live_api import LiveApi

HTML = ("/ui/", "/docs", "/docs/oauth2-redirect")
OTHER = ("/ui/js/main.js", "/openapi.json", "/v1/health", "/v1/keys", "/v1/nothing-here")


def test_every_page_and_answer_carries_the_security_headers(live_api: LiveApi) -> None:
    for path in HTML + OTHER:
        r = httpx.get(live_api.url + path, timeout=30)
        assert "server" not in r.headers, (path, r.headers)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-frame-options"] == "DENY", path
        if path in HTML:
            assert r.headers["content-type"].startswith("text/html"), path
            parts = r.headers["content-security-policy"].split(";")
            policy = dict(part.strip().split(" ", 1) for part in parts)
            assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
            assert policy["default-src"] == "'self'" and "unsafe" not in policy["script-src"]


def test_health_without_a_key_says_ok_or_degraded_only(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    bare = httpx.get(live_api.url + "/v1/health", timeout=30)
    assert bare.status_code == 200
    assert bare.json() in ({"status": "ok"}, {"status": "degraded"})
    with live_api.client(keys["read"]) as client:
        full = client.get("/v1/health").json()
    assert full["status"] == bare.json()["status"]
    assert {"workers", "database", "broker", "schema_revision", "prices"} <= full.keys()
    wrong = httpx.get(live_api.url + "/v1/health", headers=auth("tc_nope_nope"), timeout=30)
    assert wrong.json() == bare.json()  # a bad key learns nothing more than no key
