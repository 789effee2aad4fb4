"""A worker with several devices: jobs at once on disjoint device sets, sized queues, refusals.

The worker runs on this CPU with TUNECOST_WORKER_GPU_COUNT=2 logical devices and claims a GPU
kind no other test serves (L40S), as a 2-GPU L40S machine would register. Whether two jobs ran at
the same time is read from the job rows' started_at/finished_at, never from how fast they ran.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import auth
from tests.jobs.jobs_support import device_worker, events, submit, wait_status
from tests.support import ServiceEnv, WorkerProcess, wait_for

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
GPU = "L40S"  # no other test's worker serves it
IDLE_GPU = "V100-16GB"  # no worker of this kind runs during these tests


@pytest.fixture(scope="module")
def two_device_worker(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker left to size its own pool: one process per device."""
    log = tmp_path_factory.mktemp("worker2") / "worker.log"
    with device_worker(service_env, gpu=GPU, name="two", log=log) as worker:
        yield worker


def _body(job_body: Body, *, num_gpus: int, gpu: str = GPU, **over: Any) -> dict[str, Any]:
    return job_body("lora", hardware={"gpu": gpu, "provider": "aws", "num_gpus": num_gpus}, **over)


def _health(app_client: Any, keys: dict[str, str]) -> dict[str, Any]:
    """/v1/health with a key: the workers and their devices (without one it says only ok)."""
    body: dict[str, Any] = app_client.get("/v1/health", headers=auth(keys["read"])).json()
    return body


def _node(app_client: Any, keys: dict[str, str], worker: WorkerProcess) -> dict[str, Any] | None:
    nodes = _health(app_client, keys)["workers"]["nodes"]
    return next((n for n in nodes if n["name"] == worker.hostname), None)


def _span(job: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return a0 < b1 and b0 < a1


def _cores(app_client: Any, keys: dict[str, str], job_id: str) -> set[int]:
    """The cores the job was pinned to, from its "holds device(s)" event."""
    for event in events(app_client, keys, job_id):
        found = re.search(r"holds device\(s\) .*; cores ([\d,]+)\)", event["message"] or "")
        if found:
            return {int(c) for c in found.group(1).split(",")}
    return set()


def test_health_reports_each_workers_devices_total_and_free(
    two_device_worker: WorkerProcess, app_client: Any, keys: dict[str, str]
) -> None:
    node = wait_for(lambda: _node(app_client, keys, two_device_worker), timeout=30, what="the node")
    assert node is not None
    assert (node["gpu"], node["devices_total"], node["devices_free"]) == (GPU, 2, 2)
    by_kind = _health(app_client, keys)["workers"]["devices"][GPU]
    assert by_kind["total"] >= 2 and by_kind["largest_worker"] >= 2


def test_two_one_device_jobs_run_at_once_on_different_devices(
    two_device_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    first = submit(app_client, keys, _body(job_body, num_gpus=1))
    second = submit(app_client, keys, _body(job_body, num_gpus=1))
    assert first["queue"] == second["queue"] == f"gpu.{GPU}"
    # While both run, the heartbeat says the worker has no device left.
    wait_for(
        lambda: (_node(app_client, keys, two_device_worker) or {}).get("devices_free") == 0,
        timeout=300,
        what="both devices held",
    )
    done = [wait_status(app_client, keys, job["id"]) for job in (first, second)]
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], two_device_worker.output()
    assert {j["worker"] for j in done} == {two_device_worker.hostname}
    assert _overlap(done[0], done[1]), [_span(j) for j in done]
    held = [j["actuals"]["worker_devices"] for j in done]
    assert sorted(held) == [[0], [1]]
    # Each logical CPU device is its own share of the cores: the two jobs were pinned apart
    # (on a machine with a single core, both devices can only share it).
    cores = [_cores(app_client, keys, job["id"]) for job in (first, second)]
    assert cores[0] and cores[1], cores
    assert (not cores[0] & cores[1]) == (len(os.sched_getaffinity(0)) >= 2), cores
    wait_for(
        lambda: (_node(app_client, keys, two_device_worker) or {}).get("devices_free") == 2,
        timeout=60,
        what="both devices free again",
    )


def test_a_two_device_job_never_shares_a_device(
    two_device_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    big = submit(app_client, keys, _body(job_body, num_gpus=2))
    small = submit(app_client, keys, _body(job_body, num_gpus=1))
    assert big["queue"] == f"gpu.{GPU}.x2"
    assert big["status_detail"] is None  # a live worker can hold it
    done = [wait_status(app_client, keys, job["id"]) for job in (big, small)]
    assert all(j["worker"] == two_device_worker.hostname for j in done)
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], two_device_worker.output()
    assert done[0]["actuals"]["worker_devices"] == [0, 1]
    # One rank per device, and both devices billed for the whole run.
    assert done[0]["actuals"]["world_size"] == 2 and done[0]["actuals"]["num_gpus"] == 2
    assert done[0]["act_gpu_hours"] == pytest.approx(2 * done[0]["act_wall_s"] / 3600)
    # Two pool processes took the two jobs at once; whichever came second waited for devices.
    assert not _overlap(done[0], done[1]), [_span(j) for j in done]
    waited = [
        e["message"]
        for job in (big, small)
        for e in events(app_client, keys, job["id"])
        if "devices to be free" in (e["message"] or "")
    ]
    assert waited and two_device_worker.hostname in waited[0], waited


def test_a_job_larger_than_every_live_worker_is_refused_at_submit(
    two_device_worker: WorkerProcess, app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    before = app_client.get("/v1/jobs?limit=1", headers=auth(keys["read"])).json()["items"]
    resp = app_client.post(
        "/v1/jobs", json=_body(job_body, num_gpus=4), headers=auth(keys["submit"])
    )
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert problem["errors"][0]["loc"] == ["hardware", "num_gpus"]
    assert "largest live L40S worker has 2 device(s)" in problem["detail"]
    assert "TUNECOST_WORKER_GPU_COUNT" in problem["detail"]
    assert problem["workers"] == {"gpu": GPU, "largest_device_count": 2}
    after = app_client.get("/v1/jobs?limit=1", headers=auth(keys["read"])).json()["items"]
    assert after == before  # nothing was accepted


def test_with_no_live_worker_of_its_kind_a_multi_device_job_waits_in_its_queue(
    app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    job = submit(app_client, keys, _body(job_body, num_gpus=4, gpu=IDLE_GPU))
    assert job["status"] == "queued"
    assert job["queue"] == f"gpu.{IDLE_GPU}.x4"
    waits = f"no live worker for gpu.{IDLE_GPU}.x4; the job waits in the queue"
    assert job["status_detail"] == waits
    resp = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
    assert resp.status_code == 200, resp.text  # still queued: cancelled at once
    assert resp.json()["status"] == "cancelled"
