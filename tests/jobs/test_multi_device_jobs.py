"""2-device jobs end to end: API, queue, a worker with two devices, ranks, metering, the row.

The worker runs on this CPU with TUNECOST_WORKER_GPU_COUNT=2 logical devices and claims a GPU
kind no other test serves (A10G); each job runs two gloo ranks started by torch's launcher.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.jobs.jobs_support import submit, wait_status
from tests.support import ServiceEnv, WorkerProcess, start_worker

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
GPU = "A10G"  # no other test's worker serves it


@pytest.fixture(scope="module")
def two_device_worker(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A CPU worker that counts two devices."""
    log = tmp_path_factory.mktemp("worker-ranks") / "worker.log"
    with start_worker(
        service_env,
        gpu=GPU,
        hostname=f"ranks-{uuid.uuid4().hex[:6]}",
        log=log,
        extra_env={"TUNECOST_WORKER_GPU_COUNT": "2"},
        concurrency=None,
    ) as worker:
        yield worker


@pytest.mark.parametrize(
    ("method", "sharding", "strategy"),
    [("full", "fsdp_zero3", "fsdp_zero3"), ("lora", "auto", "ddp")],
)
def test_a_two_device_job_succeeds_on_two_ranks_and_bills_both(
    method: str,
    sharding: str,
    strategy: str,
    two_device_worker: WorkerProcess,
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
) -> None:
    body = job_body(method, hardware={"gpu": GPU, "provider": "aws", "num_gpus": 2})
    body["training"] = {**body["training"], "sharding": sharding}
    job = submit(app_client, keys, body)
    done = wait_status(app_client, keys, job["id"])
    assert done["status"] == "succeeded", (done.get("error"), two_device_worker.output())
    act = done["actuals"]
    assert (act["world_size"], act["strategy"], act["num_gpus"]) == (2, strategy, 2)
    assert len(act["peak_memory_per_rank_bytes"]) == 2
    assert act["peak_memory_bytes"] == max(act["peak_memory_per_rank_bytes"])
    assert act["steps"] == body["max_steps"]
    # GPU-hours bill both devices for the whole attempt.
    assert done["act_gpu_hours"] == pytest.approx(done["act_wall_s"] / 3600 * 2)
