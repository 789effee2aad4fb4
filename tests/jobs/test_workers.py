"""Several workers: routing by GPU kind, and a SIGKILLed worker's job retried once, then failed.

The extra workers run on this CPU but claim another GPU kind (TUNECOST_WORKER_GPU=T4), which is
how a worker on a T4 machine would register: they consume `gpu.T4` and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.jobs_support import (
    child_pid,
    get,
    kill_worker,
    process_gone,
    submit,
    wait_status,
)
from tests.support import ServiceEnv, WorkerProcess, start_worker, wait_for

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
FAKE_GPU = "T4"


def _t4_body(job_body: Body, **over: Any) -> dict[str, Any]:
    return job_body("lora", hardware={"gpu": FAKE_GPU, "provider": "aws"}, **over)


def test_jobs_are_routed_to_the_worker_of_their_gpu_kind(
    cpu_worker: WorkerProcess,
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    on_t4 = submit(app_client, keys, _t4_body(job_body, max_steps=3))
    assert on_t4["queue"] == f"gpu.{FAKE_GPU}"
    assert (
        on_t4["status_detail"] == f"no live worker for gpu.{FAKE_GPU}; the job waits in the queue"
    )
    on_cpu = submit(app_client, keys, job_body("lora", max_steps=3))
    assert on_cpu["queue"] == "gpu.cpu" and on_cpu["status_detail"] is None

    name = f"t4-{uuid.uuid4().hex[:6]}"
    with start_worker(service_env, gpu=FAKE_GPU, hostname=name, log=tmp_path / "t4.log") as t4:
        cpu_done = wait_status(app_client, keys, on_cpu["id"])
        t4_done = wait_status(app_client, keys, on_t4["id"])
    assert (cpu_done["status"], t4_done["status"]) == ("succeeded", "succeeded"), t4.output()
    assert cpu_done["worker"] == cpu_worker.hostname
    assert t4_done["worker"] == t4.hostname
    # Billed at the T4's price although it trained on this CPU: the job's plan decides.
    assert t4_done["act_cost_usd"] == pytest.approx(
        t4_done["act_gpu_hours"] * t4_done["price_per_gpu_hour"]
    )
    assert t4_done["price_per_gpu_hour"] != cpu_done["price_per_gpu_hour"]


def test_a_sigkilled_workers_job_is_retried_once_then_failed(
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    long_run = dict(job_body()["training"], epochs=1000)
    job = submit(app_client, keys, _t4_body(job_body, training=long_run, max_steps=None))

    def running_on(worker: WorkerProcess, attempt: int) -> Callable[[], bool]:
        def check() -> bool:
            now = get(app_client, keys, job["id"])
            assert now["status"] in ("queued", "running"), now
            return bool(
                now["status"] == "running"
                and now["worker"] == worker.hostname
                and now["attempts"] == attempt
                and child_pid(app_client, keys, job["id"])
            )

        return check

    first_name = f"doomed1-{uuid.uuid4().hex[:6]}"
    with start_worker(
        service_env, gpu=FAKE_GPU, hostname=first_name, log=tmp_path / "w1.log"
    ) as first:
        wait_for(running_on(first, 1), timeout=180, what="attempt 1 running")
        first_child = child_pid(app_client, keys, job["id"])
        kill_worker(first)
    assert first_child is not None
    wait_for(lambda: process_gone(first_child), timeout=30, what="the first child to die")

    # The heartbeat goes stale; the next worker's sweeper (or this GET) re-queues the job once.
    second_name = f"doomed2-{uuid.uuid4().hex[:6]}"
    with start_worker(
        service_env, gpu=FAKE_GPU, hostname=second_name, log=tmp_path / "w2.log"
    ) as second:
        wait_for(running_on(second, 2), timeout=240, what="attempt 2 on the second worker")
        retried = get(app_client, keys, job["id"])
        kill_worker(second)

    assert retried["attempts"] == 2
    failed = wait_status(app_client, keys, job["id"], timeout=120)
    assert failed["status"] == "failed"
    assert second.hostname in failed["error"] and "stopped sending heartbeats" in failed["error"]
    assert "gave up after 2 attempts" in failed["error"]
    assert failed["finished_at"] is not None
