"""Idempotent job submit under a burst: 50 concurrent POSTs with one Idempotency-Key."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.reliability.conftest import TINY, LiveApi

BURST = 50
TRAINING = {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32", "optimizer": "adamw"}


def _body(api: LiveApi) -> dict[str, Any]:
    return {
        "method": "lora",
        "model": {"path": TINY},
        "dataset_id": api.dataset_id,
        "training": TRAINING,
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "max_steps": 2,
        "tags": {"project": "burst"},
    }


async def _burst(api: LiveApi, key: str) -> list[httpx.Response]:
    headers = {**api.submit, "Idempotency-Key": key}
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(base_url=api.base, timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/v1/jobs", json=_body(api), headers=headers) for _ in range(BURST))
        )


def test_a_burst_with_one_idempotency_key_gives_only_2xx_and_one_job(live_api: LiveApi) -> None:
    responses = asyncio.run(_burst(live_api, "burst-1"))
    # The estimate each submit makes waits for one of the estimator's few slots here
    # (ESTIMATE_SLOTS, ESTIMATE_QUEUE): past them the answer is 503 with Retry-After, and the
    # same request sent again is answered with the one job.
    busy = [r for r in responses if r.status_code == 503]
    for refused in busy:
        assert int(refused.headers["Retry-After"]) >= 1
        assert "the estimator is busy" in refused.json()["detail"]
    with httpx.Client(base_url=live_api.base, timeout=120) as client:
        headers = {**live_api.submit, "Idempotency-Key": "burst-1"}
        again = [client.post("/v1/jobs", json=_body(live_api), headers=headers) for _ in busy]
    answered = [r for r in responses if r.status_code != 503] + again
    statuses = sorted(r.status_code for r in answered)
    assert set(statuses) <= {200, 201}, [r.text for r in answered if r.status_code >= 300][:3]
    assert statuses.count(201) == 1, statuses
    assert len({r.json()["id"] for r in answered}) == 1
    print(f"burst of {BURST}: {len(busy)} told to retry, then {len(again)} replayed")
    engine = create_engine(live_api.db_url)
    with engine.connect() as conn:
        jobs = conn.execute(
            text("SELECT count(*) FROM jobs WHERE idempotency_key = 'burst-1'")
        ).scalar()
    engine.dispose()
    assert jobs == 1
