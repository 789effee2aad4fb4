"""POST /v1/estimates stores one estimate per content: the same question of the same tenant on
the same UTC day, with the same catalog and calibration, gets the same estimate back."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from functools import partial
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.auth import service as keys_service
from app.auth.service import Principal
from app.db import session_scope
from app.estimates import reuse
from app.estimates import service as estimates_service
from app.estimates.schemas import EstimateIn
from app.estimator.efficiency import MEASURED_MATMUL_SHARE
from app.estimator.speed import DeviceSpeed
from app.models import Estimate, Scope
from app.models.base import utcnow
from tests.conftest import auth
from tests.reports.factory import make_job, unique
from worker import registry

BODY = {
    "model": "meta-llama/Llama-2-7b-hf",
    "dataset": {"num_examples": 40000, "avg_tokens": 150, "max_tokens": 1024},
    "methods": ["lora", "qlora"],
    "training": {"micro_batch_size": 1, "seq_len": 1024, "precision": "bf16_true"},
    "hardware": {"gpu": "A100-80GB", "provider": "aws"},
}


def _post(client: TestClient, secret: str, body: dict[str, Any]) -> httpx2.Response:
    r = client.post("/v1/estimates", json=body, headers=auth(secret))
    assert r.status_code == 201, r.text
    return r


def _rows(estimate_id: str) -> int:
    with session_scope() as session:
        stmt = select(func.count()).select_from(Estimate).where(Estimate.id == estimate_id)
        return int(session.scalar(stmt) or 0)


def _key(team: str | None) -> str:
    with session_scope() as session:
        _, secret = keys_service.create(session, name="reuse", scope=Scope.READ, team=team)
    return secret


def _forget_answers() -> None:
    """Empty this process's memory of answers: what another API process would see."""
    reuse.answers.clear()
    reuse.responses.clear()


def test_the_same_request_gets_the_same_estimate(app_client: TestClient) -> None:
    secret = _key(unique("reuse"))
    body = BODY | {"variants": 3}
    first = _post(app_client, secret, body)
    again = _post(app_client, secret, body)
    estimate_id = first.json()["id"]
    assert again.json()["id"] == estimate_id and again.content == first.content
    assert first.headers["location"] == again.headers["location"] == f"/v1/estimates/{estimate_id}"
    stored = app_client.get(f"/v1/estimates/{estimate_id}", headers=auth(secret))
    assert stored.json() == first.json()
    assert _rows(estimate_id) == 1
    # Another API process (no answers in memory) finds the stored one by its content.
    _forget_answers()
    assert _post(app_client, secret, body).json()["id"] == estimate_id


def test_another_question_or_tenant_gets_its_own(app_client: TestClient) -> None:
    team = unique("reuse")
    mine, colleague, other_team = _key(team), _key(team), _key(unique("other"))
    loner, other_loner = _key(None), _key(None)
    body = BODY | {"variants": 4}
    estimate_id = _post(app_client, mine, body).json()["id"]
    assert _post(app_client, colleague, body).json()["id"] == estimate_id  # one tenant
    assert _post(app_client, mine, body | {"variants": 5}).json()["id"] != estimate_id
    theirs = _post(app_client, other_team, body).json()["id"]
    alone = _post(app_client, loner, body).json()["id"]
    alone_too = _post(app_client, other_loner, body).json()["id"]
    assert len({estimate_id, theirs, alone, alone_too}) == 4
    # Each tenant sees its own only.
    missing = app_client.get(f"/v1/estimates/{estimate_id}", headers=auth(other_team))
    assert missing.status_code == 404


def test_a_new_price_makes_a_new_estimate(app_client: TestClient, keys: dict[str, str]) -> None:
    secret = _key(unique("reuse"))
    body = BODY | {"variants": 6}
    before = _post(app_client, secret, body).json()
    admin = auth(keys["admin"])
    price = before["results"]["lora"]["price_per_gpu_hour"]
    put = app_client.put(
        "/v1/catalog/prices/aws/A100-80GB",
        json={"usd_per_gpu_hour": round(price / 3, 4), "pricing": "on_demand"},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    try:
        after = _post(app_client, secret, body).json()
        assert after["id"] != before["id"]
        assert after["catalog_version"] == put.json()["catalog_version"]
        assert after["results"]["lora"]["price_per_gpu_hour"] == round(price / 3, 4)
    finally:
        app_client.delete("/v1/catalog/prices/aws/A100-80GB", headers=admin)
    restored = _post(app_client, secret, body).json()
    assert restored["id"] not in (before["id"], after["id"])  # a newer catalog version again


def test_a_new_day_makes_a_new_estimate(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _key(unique("reuse"))
    body = BODY | {"variants": 7}
    today = _post(app_client, secret, body).json()["id"]
    tomorrow = utcnow() + timedelta(days=1)
    monkeypatch.setattr(estimates_service, "utcnow", lambda: tomorrow)
    assert _post(app_client, secret, body).json()["id"] != today


def test_a_succeeded_job_is_checked_before_an_answer_is_reused(app_client: TestClient) -> None:
    secret = _key(unique("reuse"))
    body = BODY | {"variants": 8}
    first = _post(app_client, secret, body).json()["id"]
    with session_scope() as session:
        before = reuse.stamps(session)
        make_job(session, team=unique("stamp"))  # a succeeded job: calibration may change
    with session_scope() as session:
        assert reuse.stamps(session) != before
    # The calibration it fits is the same (too few jobs), so the content, and the id, are too.
    assert _post(app_client, secret, body).json()["id"] == first


def test_an_estimate_a_job_made_for_itself_is_never_handed_out() -> None:
    # A refused submit deletes the estimate it implied: that row carries no content key.
    with session_scope() as session:
        key, _ = keys_service.create(session, name="implied", scope=Scope.SUBMIT, team=unique("t"))
        principal = Principal(key_id=key.id, name=key.name, scope=Scope.SUBMIT, team=key.team)
    estimate_in = EstimateIn.model_validate(BODY | {"variants": 9})
    prepared = estimates_service.prepare_detached(estimate_in=estimate_in, principal=principal)
    with session_scope() as session:
        implied = prepared.store(session, principal=principal).id
    with session_scope() as session:
        row = session.get(Estimate, implied)
        assert row is not None and row.content_hash is None
    posted, _ = estimates_service.create_or_reuse(estimate_in=estimate_in, principal=principal)
    again, _ = estimates_service.create_or_reuse(estimate_in=estimate_in, principal=principal)
    assert posted == again != implied


def test_a_device_speed_a_worker_measures_after_an_answer_is_used(app_client: TestClient) -> None:
    # Answered from the catalog's datasheet figures, then a worker of that kind reports the
    # speed it measured at start in its heartbeat: the same question must use the measurement,
    # also in the process that answered it already.
    secret = _key(unique("reuse"))
    body = BODY | {"variants": 10}
    first = _post(app_client, secret, body).json()
    assert _post(app_client, secret, body).json()["id"] == first["id"]  # answered from memory
    gpu = "A100-80GB"  # BODY's
    beat = partial(
        registry.beat,
        hostname=f"speed-{uuid.uuid4().hex[:8]}",
        gpu=gpu,
        queue=f"gpu.{gpu}",
        device_name="NVIDIA A100-SXM4-80GB",
        device_count=1,
        devices_free=1,
        pid=os.getpid(),
    )
    # a third of the datasheet's peak, a quarter of its bandwidth, and a slow host
    slow = DeviceSpeed(matmul_tflops=104.0, memory_gbps=510.0, host_s_per_layer=8e-3)
    try:
        beat()  # alive, nothing measured yet: the same content
        assert _post(app_client, secret, body).json()["id"] == first["id"]
        beat(speed=slow)
        measured = _post(app_client, secret, body).json()
        assert measured["id"] != first["id"]
        before, after = first["results"]["lora"]["time"], measured["results"]["lora"]["time"]
        assert after["mfu_peak"] == MEASURED_MATMUL_SHARE != before["mfu_peak"]
        assert after["total_s"] > before["total_s"]
        assert _post(app_client, secret, body).json()["id"] == measured["id"]  # from memory
    finally:
        registry.remove(hostname=beat.keywords["hostname"])
    # The worker gone, its measurement no longer counts: the first content again.
    assert _post(app_client, secret, body).json()["id"] == first["id"]
