"""A queued job whose broker message was lost is sent again after a threshold, once per period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import delete, update

from app.db import session_scope
from app.models import Job, WorkerNode
from app.models.base import utcnow
from tests.conftest import auth
from tests.jobs.jobs_support import submit
from tests.support import ServiceEnv

FAKE_GPU = "L4"  # a queue no test worker consumes: the messages stay where we can count them


def test_a_long_queued_job_is_sent_again_only_while_a_worker_is_alive(
    app_client: Any,
    keys: dict[str, str],
    job_body: Callable[..., dict[str, Any]],
    service_env: ServiceEnv,
    monkeypatch: Any,
) -> None:
    from worker import sweeper

    queue = f"gpu.{FAKE_GPU}"
    broker = redis.Redis.from_url(service_env.broker_url)
    broker.delete(queue)
    job = submit(app_client, keys, job_body(hardware={"gpu": FAKE_GPU, "provider": "aws"}))
    assert broker.llen(queue) == 1
    broker.delete(queue)  # the message is lost
    with session_scope() as session:
        old = utcnow() - timedelta(hours=1)
        session.execute(update(Job).where(Job.id == job["id"]).values(updated_at=old))
    monkeypatch.setenv("TUNECOST_QUEUED_RESEND_S", "600")
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        assert job["id"] not in sweeper.sweep_once()  # no live worker for L4: nothing to gain
        assert broker.llen(queue) == 0
        with session_scope() as session:
            session.add(
                WorkerNode(hostname="l4-test@host", gpu=FAKE_GPU, queue=queue,
                           device_name="test", device_count=1, pid=1)
            )  # fmt: skip
        assert job["id"] in sweeper.sweep_once()
        assert broker.llen(queue) == 1  # sent again
        assert job["id"] not in sweeper.sweep_once()  # not again within the period
        assert broker.llen(queue) == 1
    finally:
        with session_scope() as session:
            session.execute(delete(WorkerNode).where(WorkerNode.hostname == "l4-test@host"))
        get_settings.cache_clear()
        broker.delete(queue)
    events = app_client.get(f"/v1/jobs/{job['id']}/events", headers=auth(keys["read"])).json()[
        "items"
    ]
    assert any("sent again" in (e["message"] or "") for e in events)


def test_a_multi_device_job_is_sent_again_only_to_a_worker_that_can_hold_it(
    app_client: Any,
    keys: dict[str, str],
    job_body: Callable[..., dict[str, Any]],
    service_env: ServiceEnv,
    monkeypatch: Any,
) -> None:
    from worker import sweeper

    queue = f"gpu.{FAKE_GPU}.x2"
    broker = redis.Redis.from_url(service_env.broker_url)
    broker.delete(queue)
    body = job_body(hardware={"gpu": FAKE_GPU, "provider": "aws", "num_gpus": 2})
    job = submit(app_client, keys, body)  # no live L4 worker: accepted, waits in its queue
    assert job["queue"] == queue and broker.llen(queue) == 1
    broker.delete(queue)  # the message is lost
    with session_scope() as session:
        old = utcnow() - timedelta(hours=1)
        session.execute(update(Job).where(Job.id == job["id"]).values(updated_at=old))
    monkeypatch.setenv("TUNECOST_QUEUED_RESEND_S", "600")
    from app.config import get_settings

    get_settings.cache_clear()
    names = ("l4-one@host", "l4-two@host")
    try:
        with session_scope() as session:
            session.add(
                WorkerNode(hostname=names[0], gpu=FAKE_GPU, queue=f"gpu.{FAKE_GPU}",
                           device_name="test", device_count=1, devices_free=1, pid=1)
            )  # fmt: skip
        # A 1-device L4 worker is alive, but it does not consume gpu.L4.x2: no use re-sending.
        assert job["id"] not in sweeper.sweep_once()
        assert broker.llen(queue) == 0
        seen = app_client.get(f"/v1/jobs/{job['id']}", headers=auth(keys["read"])).json()
        assert seen["status_detail"] == f"no live worker for {queue}; the job waits in the queue"
        # And a new 2-device L4 job is now refused at submit: no live L4 worker could hold it.
        refused = app_client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))
        assert refused.status_code == 422, refused.text
        with session_scope() as session:
            session.add(
                WorkerNode(hostname=names[1], gpu=FAKE_GPU, queue=f"gpu.{FAKE_GPU}",
                           device_name="test", device_count=2, devices_free=2, pid=2)
            )  # fmt: skip
        assert job["id"] in sweeper.sweep_once()
        assert broker.llen(queue) == 1  # sent again, to the queue of its size
    finally:
        with session_scope() as session:
            session.execute(delete(WorkerNode).where(WorkerNode.hostname.in_(names)))
        get_settings.cache_clear()
        broker.delete(queue)
        app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
