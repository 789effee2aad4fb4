"""Ids by a unique prefix on every route that takes an id, within the caller's tenant only."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth import service as keys_service
from app.db import session_scope
from app.errors import NotFound
from app.models import Dataset, Scope
from tests.conftest import auth

HEX = "0123456789abcdef"


def _dataset(dataset_id: str, *, team: str) -> None:
    with session_scope() as session:
        session.add(
            Dataset(
                id=dataset_id,
                name=dataset_id,
                storage_path=f"datasets/{dataset_id}/data.jsonl",
                size_bytes=1,
                sha256="0" * 64,
                format="text",
                num_examples=1,
                total_tokens=1,
                max_tokens=1,
                tokenizer="approximate",
                stats={
                    "examples": 1,
                    "total_tokens": 1,
                    "mean_tokens": 1.0,
                    "p50_tokens": 1,
                    "p95_tokens": 1,
                    "max_tokens": 1,
                    "min_tokens": 1,
                    "tokenizer": "approximate",
                },
                team=team,
            )
        )


@pytest.fixture(scope="module")
def made(keys: dict[str, str]) -> dict[str, str]:
    """Datasets of team ml sharing prefixes, and one of another team starting like them."""
    stem = "ds_" + "".join(random.Random(7).choice(HEX) for _ in range(20))
    ids = {
        "a": stem + "a" + "0" * 11,
        "b": stem + "b" + "0" * 11,
        "other": stem + "c" + "0" * 11,
    }
    _dataset(ids["a"], team="ml")
    _dataset(ids["b"], team="ml")
    _dataset(ids["other"], team="elsewhere")
    return {"stem": stem, **ids}


def test_a_unique_prefix_finds_the_dataset_with_or_without_its_kind(
    app_client: Any, keys: dict[str, str], made: dict[str, str]
) -> None:
    client: TestClient = app_client
    for prefix in (made["a"][:25], made["a"][3:25], made["a"]):
        got = client.get(f"/v1/datasets/{prefix}", headers=auth(keys["read"]))
        assert got.status_code == 200, got.text
        assert got.json()["id"] == made["a"]


def test_an_ambiguous_prefix_is_a_409_naming_the_matches(
    app_client: Any, keys: dict[str, str], made: dict[str, str]
) -> None:
    client: TestClient = app_client
    got = client.get(f"/v1/datasets/{made['stem']}", headers=auth(keys["read"]))
    assert got.status_code == 409, got.text
    body = got.json()
    assert body["title"] == "Ambiguous id" and "give more of the id" in body["detail"]
    # Team ml sees two of the three rows starting with the stem: the other team's is not named.
    assert body["matches"] == sorted([made["a"], made["b"]])
    assert made["other"] not in got.text


def test_another_tenants_row_is_never_found_by_prefix(
    app_client: Any, keys: dict[str, str], made: dict[str, str]
) -> None:
    client: TestClient = app_client
    got = client.get(f"/v1/datasets/{made['other'][:25]}", headers=auth(keys["read"]))
    assert got.status_code == 404
    admin = client.get(f"/v1/datasets/{made['other'][:25]}", headers=auth(keys["admin"]))
    assert admin.status_code == 200 and admin.json()["id"] == made["other"]


def test_too_short_a_prefix_is_not_scanned_for(
    app_client: Any, keys: dict[str, str], made: dict[str, str]
) -> None:
    client: TestClient = app_client
    got = client.get(f"/v1/datasets/{made['a'][:6]}", headers=auth(keys["admin"]))
    assert got.status_code == 404 and "at least 4 characters" in got.json()["detail"]
    wild = client.get("/v1/datasets/ds_%25%25%25%25", headers=auth(keys["admin"]))
    assert wild.status_code == 404  # LIKE wildcards in a prefix match themselves only


def test_jobs_estimates_and_keys_take_prefixes(app_client: Any, keys: dict[str, str]) -> None:
    client: TestClient = app_client
    head = auth(keys["submit"])
    rows = "\n".join('{"text": "a tiny example"}' for _ in range(4)).encode()
    files = {"file": ("p.jsonl", io.BytesIO(rows), "application/octet-stream")}
    ds = client.post("/v1/datasets", files=files, headers=head).json()
    est = client.post(
        "/v1/estimates",
        json={
            "model": "openai-community/gpt2",
            "dataset": {"dataset_id": ds["id"]},
            "hardware": {"gpu": "A100-80GB"},
        },
        headers=head,
    ).json()
    got = client.get(f"/v1/estimates/{est['id'][:16]}", headers=head)
    assert got.status_code == 200 and got.json()["id"] == est["id"]
    job = client.post(
        "/v1/jobs",
        json={"estimate_id": est["id"], "method": "lora"},
        headers=head,
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    for path in ("", "/events"):
        got = client.get(f"/v1/jobs/{job_id[:12]}{path}", headers=head)
        assert got.status_code == 200, got.text
    assert client.get(f"/v1/jobs/{job_id[:12]}", headers=head).json()["id"] == job_id
    cancelled = client.post(f"/v1/jobs/{job_id[4:14]}/cancel", headers=head)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    with session_scope() as session:
        key, _ = keys_service.create(session, name="to revoke", scope=Scope.READ)
        key_id = key.id
    revoked = client.post(f"/v1/keys/{key_id[:14]}/revoke", headers=auth(keys["admin"]))
    assert revoked.status_code == 200 and revoked.json()["id"] == key_id


def test_the_key_lookup_refuses_what_it_does_not_find() -> None:
    with session_scope() as session, pytest.raises(NotFound, match="no API key"):
        keys_service.find(session, key_id="key_ffffffffffffffffffff")
