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
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 201}, [r.text for r in responses if r.status_code >= 300][:3]
    assert statuses.count(201) == 1, statuses
    assert len({r.json()["id"] for r in responses}) == 1
    engine = create_engine(live_api.db_url)
    with engine.connect() as conn:
        jobs = conn.execute(
            text("SELECT count(*) FROM jobs WHERE idempotency_key = 'burst-1'")
        ).scalar()
    engine.dispose()
    assert jobs == 1
