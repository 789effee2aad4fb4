"""2-device jobs end to end: API, queue, a worker with two devices, ranks, metering, the row.

The worker runs on this CPU with TUNECOST_WORKER_GPU_COUNT=2 logical devices and claims a GPU
kind no other test serves (A10G); each job runs two gloo ranks started by torch's launcher.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from tests.conftest import auth
from tests.jobs.jobs_support import child_pid, device_worker, events, get, submit, wait_status
from tests.support import ServiceEnv, WorkerProcess, wait_for

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
GPU = "A10G"  # no other test's worker serves it
LONG_RUN_STEPS = 1_000_000  # far more than any test waits for
GONE_WAIT_S = 15.0  # the launcher's grace to end its ranks (3 s) and the exits, with room


@pytest.fixture(scope="module")
def two_device_worker(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A CPU worker that counts two devices."""
    log = tmp_path_factory.mktemp("worker-ranks") / "worker.log"
    with device_worker(service_env, gpu=GPU, name="ranks", log=log) as worker:
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


def test_a_killed_pool_process_takes_its_ranks_along_and_the_job_is_retried(
    two_device_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    body = job_body(
        "lora", hardware={"gpu": GPU, "provider": "aws", "num_gpus": 2}, max_steps=LONG_RUN_STEPS
    )
    job = submit(app_client, keys, body)

    def training(attempt: int) -> Callable[[], bool]:
        """The job runs `attempt` and its latest training process has reported a step."""

        def check() -> bool:
            now = get(app_client, keys, job["id"])
            if now["status"] != "running" or now["attempts"] != attempt:
                return False
            seen = events(app_client, keys, job["id"])
            starts = [
                i for i, e in enumerate(seen) if "training process started" in (e["message"] or "")
            ]
            return bool(starts) and any(e["kind"] == "progress" for e in seen[starts[-1] :])

        return check

    wait_for(training(1), timeout=180, what="attempt 1 training on two ranks")
    launcher_pid = child_pid(app_client, keys, job["id"])
    assert launcher_pid is not None
    launcher = psutil.Process(launcher_pid)
    tree = [launcher, *launcher.children(recursive=True)]
    assert len(tree) >= 3, tree  # the launcher and its two ranks
    pool = launcher.parent()
    assert pool is not None and pool.pid != two_device_worker.proc.pid
    pool.send_signal(signal.SIGKILL)  # the task's process dies, as under the OOM killer

    _gone, alive = psutil.wait_procs(tree, timeout=GONE_WAIT_S)
    assert not [p for p in alive if _runs(p)], alive
    # Its heartbeat goes stale; the sweeper re-queues the job and it runs again, on both devices.
    wait_for(training(2), timeout=180, what="attempt 2 training")
    resp = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
    assert resp.status_code == 202, resp.text
    done = wait_status(app_client, keys, job["id"])
    assert done["status"] == "cancelled" and done["attempts"] == 2, done


def _runs(process: psutil.Process) -> bool:
    """True while `process` runs (a zombie has ended: only its exit status waits to be read)."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
