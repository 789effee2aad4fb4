"""Tenancy: a key's team is its tenant, a team-less key is its own; nothing crosses tenants.

Team B's keys (and a team-less key) try every reference to team A's dataset, estimate, job and
artifact that the API accepts; each is answered as if the row did not exist, while team A's own
keys (and the admin) keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from app.auth import service as keys_service
from app.db import session_scope
from app.jobs.artifacts import artifact_url
from app.models import Job, Scope
from tests.conftest import auth
from tests.jobs.jobs_support import IDLE_HARDWARE


def _key(scope: Scope, team: str | None, name: str) -> dict[str, str]:
    with session_scope() as session:
        _, secret = keys_service.create(session, name=name, scope=scope, team=team)
    return auth(secret)


@pytest.fixture(scope="module")
def outsiders() -> dict[str, dict[str, str]]:
    return {
        "team B submit": _key(Scope.SUBMIT, "team-b", "b-submit"),
        "team B read": _key(Scope.READ, "team-b", "b-read"),
        "team-less submit": _key(Scope.SUBMIT, None, "loner"),
    }


@pytest.fixture(scope="module")
def team_a_job(
    app_client: Any, keys: dict[str, str], job_body: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """A job of team `ml` whose artifact folder exists in storage (as a finished job's would)."""
    body = job_body(hardware=IDLE_HARDWARE)  # it is read, never run
    resp = app_client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    job = dict(resp.json())
    url = artifact_url(job["id"])
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/adapter_config.json", "wb") as fh:
        fh.write(b'{"r": 4}')
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(artifact_path=url))
    return job


def test_reads_of_another_tenants_rows_are_404(
    app_client: Any,
    keys: dict[str, str],
    team_a_job: dict[str, Any],
    dataset_id: str,
    outsiders: dict[str, dict[str, str]],
) -> None:
    job_id, estimate_id = team_a_job["id"], team_a_job["estimate_id"]
    urls = [
        f"/v1/datasets/{dataset_id}",
        f"/v1/estimates/{estimate_id}",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/events",
        f"/v1/jobs/{job_id}/artifact",
    ]
    for who, headers in outsiders.items():
        for url in urls:
            r = app_client.get(url, headers=headers)
            if url.endswith("artifact") and who == "team B read":
                assert r.status_code == 403, r.text  # the read scope never downloads
                continue
            assert r.status_code == 404, (who, url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = app_client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
        # the read scope may not cancel at all; a submit key of another tenant finds no job
        assert r.status_code == (403 if who == "team B read" else 404), (who, r.text)
        for listing, own in (
            ("/v1/jobs", job_id),
            ("/v1/datasets", dataset_id),
            ("/v1/estimates", estimate_id),
        ):
            items = app_client.get(listing, params={"limit": 100}, headers=headers).json()["items"]
            assert own not in {item["id"] for item in items}, (who, listing)
    # Team A (both of its keys) and the admin still see everything.
    for headers in (auth(keys["read"]), auth(keys["submit"]), auth(keys["admin"])):
        for url in urls[:4]:
            assert app_client.get(url, headers=headers).status_code == 200, url
    artifact = app_client.get(urls[4], headers=auth(keys["submit"]))
    assert artifact.status_code == 200 and b"adapter_config.json" in artifact.content


def test_jobs_on_another_tenants_dataset_or_estimate_are_refused(
    app_client: Any,
    job_body: Callable[..., dict[str, Any]],
    team_a_job: dict[str, Any],
    dataset_id: str,
    outsiders: dict[str, dict[str, str]],
) -> None:
    on_dataset = job_body()
    on_estimate = {
        "estimate_id": team_a_job["estimate_id"],
        "method": "lora",
        "dataset_id": None,
        "max_steps": 2,
    }
    for who in ("team B submit", "team-less submit"):
        headers = outsiders[who]
        r = app_client.post("/v1/jobs", json=on_dataset, headers=headers)
        assert r.status_code == 422, (who, r.text)
        # Refused where the dataset is first resolved (the implied estimate's dataset.dataset_id).
        assert r.json()["errors"][0]["loc"][-1] == "dataset_id"
        assert f"no dataset with id {dataset_id!r}" in r.json()["detail"]
        r = app_client.post("/v1/jobs", json=on_estimate, headers=headers)
        assert r.status_code == 422, (who, r.text)
        assert r.json()["errors"][0]["loc"] == ["estimate_id"]
        est = {
            "model": {"path": "tiny-llama"},
            "dataset": {"dataset_id": dataset_id},
            "hardware": {"gpu": "cpu"},
        }
        r = app_client.post("/v1/estimates", json=est, headers=headers)
        assert r.status_code == 422, (who, r.text)
        assert r.json()["errors"][0]["loc"] == ["dataset", "dataset_id"]


def test_a_team_less_key_is_its_own_tenant_and_cannot_claim_a_team(
    app_client: Any,
    keys: dict[str, str],
    job_body: Callable[..., dict[str, Any]],
    outsiders: dict[str, dict[str, str]],
) -> None:
    loner = outsiders["team-less submit"]
    est = {"model": {"path": "tiny-llama"}, "dataset": {"num_examples": 10, "avg_tokens": 20,
           "max_tokens": 40}, "hardware": {"gpu": "cpu"}}  # fmt: skip
    made = app_client.post("/v1/estimates", json=est, headers=loner)
    assert made.status_code == 201, made.text
    own = made.json()["id"]
    assert app_client.get(f"/v1/estimates/{own}", headers=loner).status_code == 200
    for other in (outsiders["team-less submit"], auth(keys["read"])):
        if other is loner:
            continue
        assert app_client.get(f"/v1/estimates/{own}", headers=other).status_code == 404
    other_loner = _key(Scope.READ, None, "other loner")
    assert app_client.get(f"/v1/estimates/{own}", headers=other_loner).status_code == 404

    claim = job_body(tags={"team": "ml"})
    r = app_client.post("/v1/jobs", json=claim, headers=loner)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["tags", "team"]
    r = app_client.post(
        "/v1/jobs", json=job_body(tags={"team": "ml"}), headers=outsiders["team B submit"]
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["tags", "team"]
