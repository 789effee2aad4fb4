"""A task sent by name through real Redis runs in a real worker process and returns its result."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.kit.queue import get_client, queue_for
from tests.conftest import auth
from tests.support import wait_for


def test_echo_task_through_redis(cpu_worker: object) -> None:
    result = get_client().send_task("tunecost.echo", args=[{"n": 42}], queue=queue_for("cpu"))
    value = result.get(timeout=60)
    assert value["payload"] == {"n": 42}


def test_health_counts_the_live_worker(
    app_client: TestClient, cpu_worker: object, keys: dict[str, str]
) -> None:
    read = auth(keys["read"])  # workers and broker are for a caller with a key
    body = wait_for(
        lambda: (
            (b := app_client.get("/v1/health", headers=read).json())["workers"]["by_gpu"].get("cpu")
            and b
        ),
        timeout=30,
        what="worker in health",
    )
    assert body["workers"]["live"] >= 1
    assert body["broker"]["ok"] is True
