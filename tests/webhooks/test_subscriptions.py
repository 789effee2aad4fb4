"""Webhook subscriptions over HTTP: the secret shown once and kept sealed, SSRF refused, tenancy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.db import session_scope
from app.models import WebhookSubscription
from app.webhooks import secrets
from tests.conftest import auth

URL = "/v1/webhooks"


def test_the_secret_is_returned_once_and_stored_encrypted(
    app_client: Any, keys: dict[str, str], dev_targets: None
) -> None:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["job.succeeded", "job.failed"]}
    made = app_client.post(URL, json=body, headers=auth(keys["submit"]))
    assert made.status_code == 201, made.text
    sub = made.json()
    secret = sub["secret"]
    assert secret.startswith("whsec_") and sub["secret_hint"] == secret[:10]
    assert sub["team"] == "ml" and sub["events"] == ["job.succeeded", "job.failed"]
    for path in (URL, f"{URL}/{sub['id']}"):
        text = app_client.get(path, headers=auth(keys["read"])).text
        assert sub["id"] in text and secret not in text and '"secret"' not in text
    with session_scope() as session:
        row = session.scalar(select(WebhookSubscription).where(WebhookSubscription.id == sub["id"]))
        assert row is not None and secret not in row.secret_sealed
        assert secrets.unseal(row.secret_sealed) == secret
    rotated = app_client.post(f"{URL}/{sub['id']}/rotate-secret", headers=auth(keys["submit"]))
    assert rotated.status_code == 200 and rotated.json()["secret"] != secret
    patched = app_client.patch(
        f"{URL}/{sub['id']}",
        json={"active": False, "events": ["job.failed"]},
        headers=auth(keys["submit"]),
    )
    assert patched.status_code == 200 and patched.json()["active"] is False
    gone = app_client.delete(f"{URL}/{sub['id']}", headers=auth(keys["submit"]))
    assert gone.status_code == 200
    assert app_client.get(f"{URL}/{sub['id']}", headers=auth(keys["read"])).status_code == 404


def test_private_and_loopback_targets_are_refused_by_default(
    app_client: Any, keys: dict[str, str]
) -> None:
    for url in (
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "http://93.184.215.14/hook",
    ):
        resp = app_client.post(
            URL, json={"url": url, "events": ["job.failed"]}, headers=auth(keys["submit"])
        )
        assert resp.status_code == 422, (url, resp.text)
        assert resp.json()["errors"][0]["loc"] == ["url"], url


def test_bad_events_and_other_tenants(
    app_client: Any, keys: dict[str, str], dev_targets: None
) -> None:
    bad = app_client.post(
        URL,
        json={"url": "http://127.0.0.1:9/", "events": ["job.exploded"]},
        headers=auth(keys["submit"]),
    )
    assert bad.status_code == 422 and "job.exploded" in bad.text
    read_only = app_client.post(
        URL,
        json={"url": "http://127.0.0.1:9/", "events": ["job.failed"]},
        headers=auth(keys["read"]),
    )
    assert read_only.status_code == 403
    theirs = app_client.post(
        URL,
        json={"url": "http://127.0.0.1:9/", "events": ["job.failed"], "team": "ops"},
        headers=auth(keys["admin"]),
    )
    assert theirs.status_code == 201 and theirs.json()["team"] == "ops"
    ours = {s["id"] for s in app_client.get(URL, headers=auth(keys["read"])).json()["items"]}
    assert theirs.json()["id"] not in ours
    path = f"{URL}/{theirs.json()['id']}"
    assert app_client.get(path, headers=auth(keys["read"])).status_code == 404
    assert app_client.get(f"{path}/deliveries", headers=auth(keys["read"])).status_code == 404
    assert app_client.post(f"{path}/ping", headers=auth(keys["submit"])).status_code == 404
