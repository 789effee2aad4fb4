"""Helpers for the tests that run jobs on real workers."""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import auth
from tests.support import ServiceEnv, WorkerProcess, start_worker, wait_for

ACTIVE = ("queued", "running", "cancel_requested")
# A tiny job is seconds of training, but the child's start-up (spawn, import torch/transformers/
# peft, load) takes from ~10 s on an idle machine to a minute on two busy cores; several jobs
# may queue behind each other on the one test worker.
JOB_TIMEOUT_S = 420
# No test starts a worker of this kind: a job on it stays queued, trains nothing and holds no
# worker that another test waits on (a queued job on a served kind is trained when its worker
# starts, ahead of that test's own jobs).
IDLE_HARDWARE = {"gpu": "V100-16GB", "provider": "aws"}


@contextmanager
def device_worker(
    env: ServiceEnv,
    *,
    gpu: str,
    name: str,
    log: Path,
    devices: int = 2,
    extra_env: dict[str, str] | None = None,
) -> Iterator[WorkerProcess]:
    """A worker of `gpu` that counts `devices` devices and sizes its own pool (one process per
    device), as a worker on a multi-GPU machine does."""
    with start_worker(
        env,
        gpu=gpu,
        hostname=f"{name}-{uuid.uuid4().hex[:6]}",
        log=log,
        extra_env={"TUNECOST_WORKER_GPU_COUNT": str(devices), **(extra_env or {})},
        concurrency=None,
    ) as worker:
        yield worker


def upload_dataset(client: Any, key: str, path: Path, *, model_path: str) -> str:
    """Upload the JSONL file at `path` for `model_path`; its dataset id."""
    with path.open("rb") as fh:
        resp = client.post(
            "/v1/datasets",
            files={"file": (path.name, fh, "application/x-ndjson")},
            data={"name": path.stem, "model_path": model_path},
            headers=auth(key),
        )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def submit(client: Any, keys: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """POST a job and return it; fail with the problem document otherwise."""
    resp = client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def get(client: Any, keys: dict[str, str], job_id: str) -> dict[str, Any]:
    """GET a job (which also sweeps it if its worker died)."""
    resp = client.get(f"/v1/jobs/{job_id}", headers=auth(keys["read"]))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_status(
    client: Any,
    keys: dict[str, str],
    job_id: str,
    statuses: tuple[str, ...] | None = None,
    *,
    timeout: float = JOB_TIMEOUT_S,
) -> dict[str, Any]:
    """Poll until the job is in one of `statuses` (default: any final status)."""

    def reached() -> dict[str, Any] | None:
        job = get(client, keys, job_id)
        done = job["status"] in statuses if statuses else job["status"] not in ACTIVE
        return job if done else None

    return dict(wait_for(reached, timeout=timeout, interval=0.5, what=f"job {job_id} {statuses}"))


def events(client: Any, keys: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    """Every event of a job, following the `after` cursor."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(
            f"/v1/jobs/{job_id}/events?after={after}&limit=100", headers=auth(keys["read"])
        ).json()
        out += page["items"]
        if not page["items"]:
            return out
        after = page["next_after"]


def child_pid(client: Any, keys: dict[str, str], job_id: str) -> int | None:
    """The pid of the job's latest training child, from its status events."""
    pids = [
        int(m.group(1))
        for e in events(client, keys, job_id)
        if (m := re.search(r"training process started \(pid (\d+)\)", e["message"] or ""))
    ]
    return pids[-1] if pids else None


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (reaped, or a zombie waiting to be)."""
    status = Path(f"/proc/{pid}/status")
    try:
        text = status.read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in text


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL the worker's whole process group (main process, pool, training child)."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=30)
