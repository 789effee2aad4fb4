"""Per-tenant quotas (app/auth/quotas.py): datasets and their bytes, active jobs and webhook
subscriptions, each refused past its setting with a 409 that names the quota and the fix, no
row or file left behind; other tenants unaffected; race-free on PostgreSQL and SQLite; and
DELETE /v1/datasets/{id}, which makes room.

The HTTP tests run against one real uvicorn process with small quotas; the race tests run the
check itself from many threads at once on both databases.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fsspec.core import url_to_fs
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.auth import quotas
from app.auth import service as keys_service
from app.db import make_engine, session_scope
from app.kit.migrate import upgrade_head
from app.models import ApiKey, Dataset, Job, JobStatus, Scope, WebhookSubscription
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.jobs.jobs_support import IDLE_HARDWARE
from tests.live_api import LiveApi, serve
from tests.support import ServiceEnv, pointed_at

TINY = "quota-tiny-llama"
WEBHOOKS, ACTIVE_JOBS, DATASETS = 3, 2, 3
TRAINING = {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32", "optimizer": "adamw"}
RACERS = 8


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text dataset of 200 examples; its size S sets the byte quota (3 S - 1)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("q") / "big.jsonl", n=200, fmt="text")


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("q") / "small.jsonl", n=3, fmt="text")


@pytest.fixture(scope="module")
def quota_api(
    service_env: ServiceEnv,
    big_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveApi]:
    """The API with small quotas, and webhooks allowed to name this machine."""
    dest = service_env.model_root / TINY
    if not (dest / "config.json").exists():
        make_tiny_model(dest, vocab_size=384, hidden_size=64, layers=2, heads=4, kv_heads=2)
    variables = {
        **service_env.variables(),
        "TUNECOST_QUOTA_WEBHOOKS": str(WEBHOOKS),
        "TUNECOST_QUOTA_ACTIVE_JOBS": str(ACTIVE_JOBS),
        "TUNECOST_QUOTA_DATASETS": str(DATASETS),
        "TUNECOST_QUOTA_DATASET_BYTES": str(3 * big_file.stat().st_size - 1),
        "TUNECOST_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "TUNECOST_WEBHOOK_ALLOW_HTTP": "true",
    }
    with serve(variables, tmp_path_factory.mktemp("quota-api") / "uvicorn.log") as api:
        yield api


def _team_keys() -> tuple[str, dict[str, str]]:
    """A new team and its submit and read keys (a fresh tenant for each test)."""
    team = f"quota-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        keys = {
            scope.value: keys_service.create(
                session, name=f"{team} {scope}", scope=scope, team=team
            )[1]
            for scope in (Scope.SUBMIT, Scope.READ)
        }
    return team, keys


def _refused(resp: httpx.Response, name: str, *, limit: int, held: int) -> None:
    """A 409 problem naming quota `name`, its setting, what is held and the limit."""
    assert resp.status_code == 409, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"].endswith("/quota-exceeded")
    setting = f"TUNECOST_{name.upper()}"
    assert body["quota"]["name"] == name
    assert body["quota"]["setting"] == setting
    assert body["quota"]["limit"] == limit
    assert body["quota"]["held"] == held
    assert setting in body["detail"]


def _quotas(api: LiveApi, secret: str) -> dict[str, dict[str, int]]:
    """GET /v1/quotas of the key's tenant: {name: {limit, held, left}}."""
    with api.client(secret) as client:
        resp = client.get("/v1/quotas")
    assert resp.status_code == 200, resp.text
    return {q["name"]: {k: q[k] for k in ("limit", "held", "left")} for q in resp.json()["items"]}


def _hook(client: httpx.Client, n: int) -> httpx.Response:
    return client.post(
        "/v1/webhooks", json={"url": f"http://127.0.0.1:9/hook-{n}", "events": ["job.failed"]}
    )


def _upload(client: httpx.Client, path: Path, name: str) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post(
            "/v1/datasets",
            files={"file": (path.name, fh, "application/x-ndjson")},
            data={"name": name, "model_path": TINY},
        )


def _stored_files(service_env: ServiceEnv) -> set[str]:
    fs, root = url_to_fs(str(service_env.storage_root / "datasets"))
    return set(fs.find(root)) if fs.exists(root) else set()


def test_webhooks_past_the_quota_are_refused_and_a_delete_makes_room(
    quota_api: LiveApi,
) -> None:
    team, keys = _team_keys()
    _, others = _team_keys()
    with quota_api.client(keys["submit"]) as client, quota_api.client(others["submit"]) as other:
        made = [_hook(client, n) for n in range(WEBHOOKS)]
        assert [r.status_code for r in made] == [201] * WEBHOOKS
        _refused(_hook(client, 99), "quota_webhooks", limit=WEBHOOKS, held=WEBHOOKS)
        assert _hook(other, 0).status_code == 201  # another tenant's quota is its own
        assert _quotas(quota_api, keys["read"])["quota_webhooks"] == {
            "limit": WEBHOOKS,
            "held": WEBHOOKS,
            "left": 0,
        }
        assert client.delete(f"/v1/webhooks/{made[0].json()['id']}").status_code == 200
        assert _quotas(quota_api, keys["read"])["quota_webhooks"]["left"] == 1
        assert _hook(client, 100).status_code == 201
    with session_scope() as session:
        held = session.scalar(select(func.count()).where(WebhookSubscription.team == team))
    assert held == WEBHOOKS


def test_concurrent_creates_never_pass_the_quota(quota_api: LiveApi) -> None:
    """Many creates at once of one tenant: exactly the quota's worth succeed over HTTP."""
    team, keys = _team_keys()
    answers: list[int] = []
    start = threading.Barrier(RACERS)

    def race(n: int) -> None:
        with quota_api.client(keys["submit"]) as client:
            start.wait()
            answers.append(_hook(client, n).status_code)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [201] * WEBHOOKS + [409] * (RACERS - WEBHOOKS)
    with session_scope() as session:
        held = session.scalar(select(func.count()).where(WebhookSubscription.team == team))
    assert held == WEBHOOKS


def test_dataset_count_and_byte_quotas(
    quota_api: LiveApi, service_env: ServiceEnv, big_file: Path, small_file: Path
) -> None:
    team, keys = _team_keys()
    size = big_file.stat().st_size
    with quota_api.client(keys["submit"]) as client:
        first = _upload(client, big_file, "one")
        assert first.status_code == 201, first.text
        assert _upload(client, big_file, "two").status_code == 201
        before = _stored_files(service_env)
        _refused(
            _upload(client, big_file, "three"),
            "quota_dataset_bytes",
            limit=3 * size - 1,
            held=2 * size,
        )
        assert _stored_files(service_env) == before  # nothing stored for the refused upload
        small = _upload(client, small_file, "small")
        assert small.status_code == 201  # still under the bytes
        held = _quotas(quota_api, keys["read"])
        assert held["quota_datasets"] == {"limit": DATASETS, "held": 3, "left": 0}
        assert held["quota_dataset_bytes"]["held"] == 2 * size + small.json()["size_bytes"]
        _refused(_upload(client, small_file, "four"), "quota_datasets", limit=DATASETS, held=3)
        with session_scope() as session:
            rows = session.scalar(select(func.count()).where(Dataset.team == team))
        assert rows == DATASETS

        # Deleting one makes room; its file goes with it; the next upload fits again.
        gone = first.json()["id"]
        with session_scope() as session:
            row = session.get(Dataset, gone)
            assert row is not None
            url = row.storage_path
        fs, path = url_to_fs(url)
        assert fs.exists(path)
        deleted = client.delete(f"/v1/datasets/{gone}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["id"] == gone
        assert not fs.exists(path)
        assert client.get(f"/v1/datasets/{gone}").status_code == 404
        assert client.delete(f"/v1/datasets/{gone}").status_code == 404
        assert _upload(client, small_file, "five").status_code == 201


def _job_body(dataset_id: str) -> dict[str, Any]:
    return {
        "method": "lora",
        "model": {"path": TINY},
        "dataset_id": dataset_id,
        "training": dict(TRAINING),
        "hardware": dict(IDLE_HARDWARE),  # no worker serves it: the jobs stay queued
        "max_steps": 2,
    }


def _finish(job_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.CANCELLED))


def test_active_jobs_quota_and_datasets_in_use(quota_api: LiveApi, small_file: Path) -> None:
    team, keys = _team_keys()
    _, others = _team_keys()
    with quota_api.client(keys["submit"]) as client:
        up = _upload(client, small_file, "for jobs")
        assert up.status_code == 201, up.text
        ds = up.json()["id"]
        body = _job_body(ds)
        jobs = []
        for n in range(ACTIVE_JOBS):
            resp = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"q-{n}"})
            assert resp.status_code == 201, resp.text
            jobs.append(resp.json()["id"])
        _refused(client.post("/v1/jobs", json=body), "quota_active_jobs", limit=ACTIVE_JOBS, held=2)
        assert _quotas(quota_api, keys["read"])["quota_active_jobs"]["left"] == 0
        # A retry of a job already made is its replay, not a new job: never refused.
        again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "q-0"})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == jobs[0]

        # A dataset an unfinished job trains on cannot be deleted; another tenant cannot see it.
        refused = client.delete(f"/v1/datasets/{ds}")
        assert refused.status_code == 409, refused.text
        assert jobs[0] in refused.json()["detail"] or jobs[1] in refused.json()["detail"]
        with quota_api.client(others["submit"]) as other:
            assert other.delete(f"/v1/datasets/{ds}").status_code == 404

        # A finished job frees its place; finished jobs keep their figures, losing only the link.
        _finish(jobs[0])
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        jobs.append(resp.json()["id"])
        for job_id in jobs:
            _finish(job_id)
        assert client.delete(f"/v1/datasets/{ds}").status_code == 200
    with session_scope() as session:
        kept = session.scalars(select(Job).where(Job.team == team)).all()
    assert sorted(j.id for j in kept) == sorted(jobs)
    assert all(j.dataset_id is None and j.est_cost_usd is not None for j in kept)


# The race, at the service: each thread checks, waits (so a check without the lock would let
# every thread through), inserts and commits.


def _subscription(team: str, key_id: str) -> WebhookSubscription:
    return WebhookSubscription(
        id=f"whk_{uuid.uuid4().hex[:20]}",
        team=team,
        created_by_key_id=key_id,
        url="https://example.com/hook",
        events=["job.failed"],
        secret_sealed="sealed",
        secret_hint="hint",
        active=True,
    )


def _race(make_session: Callable[[], Session], team: str, key_id: str) -> list[str]:
    outcomes: list[str] = []
    start = threading.Barrier(RACERS)

    def one() -> None:
        with make_session() as session:
            start.wait()
            try:
                quotas.check_webhook(session, quotas.Tenant(team=team, key_id=key_id))
            except quotas.QuotaExceeded:
                session.rollback()
                outcomes.append("refused")
                return
            time.sleep(0.05)
            session.add(_subscription(team, key_id))
            session.commit()
            outcomes.append("made")

    threads = [threading.Thread(target=one) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _new_key(session: Session, team: str) -> str:
    key = ApiKey(
        id=f"key_{uuid.uuid4().hex[:20]}",
        name="racer",
        prefix=uuid.uuid4().hex[:12],
        digest=uuid.uuid4().hex,
        scope=Scope.SUBMIT,
        team=team,
    )
    session.add(key)
    session.commit()
    return key.id


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_check_is_race_free(backend: str, service_env: ServiceEnv, sqlite_url: str) -> None:
    url = service_env.database_url if backend == "postgresql" else sqlite_url
    if backend == "sqlite":
        upgrade_head(url)
    engine = make_engine(url)
    try:
        make = sessionmaker(bind=engine, expire_on_commit=False)
        team = f"race-{uuid.uuid4().hex[:8]}"
        with make() as session:
            key_id = _new_key(session, team)
        with pointed_at({"TUNECOST_QUOTA_WEBHOOKS": str(WEBHOOKS)}):
            outcomes = _race(make, team, key_id)
        assert sorted(outcomes) == ["made"] * WEBHOOKS + ["refused"] * (RACERS - WEBHOOKS)
        with make() as session:
            count = session.scalar(select(func.count()).where(WebhookSubscription.team == team))
        assert count == WEBHOOKS
    finally:
        engine.dispose()
