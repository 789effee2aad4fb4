"""`tunecost workers` as a subprocess against a live API with a real worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.live_api import LiveApi
from tests.support import ROOT, WorkerProcess

pytestmark = pytest.mark.slow


def _workers(url: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TUNECOST_API_KEY"}
    if key is not None:
        env["TUNECOST_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", "workers", "--url", url],
        cwd=ROOT,
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workers_lists_each_live_worker_with_its_devices_to_a_read_key(
    live_api: LiveApi, cpu_worker: WorkerProcess, keys: dict[str, str]
) -> None:
    done = _workers(live_api.url, keys["read"])
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if cpu_worker.hostname in line)
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["cpu", "1"], row  # kind, devices
    assert "cpu: 1 device(s)" in done.stdout and "jobs of up to 1" in done.stdout


def test_workers_says_when_the_server_cannot_be_reached_or_there_is_no_key() -> None:
    done = _workers("http://127.0.0.1:9", "tc_some_key")
    assert done.returncode == 1 and "cannot reach" in done.stderr
    done = _workers("http://127.0.0.1:9", None)
    assert done.returncode == 2 and "API key is needed" in done.stderr
