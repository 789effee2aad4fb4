"""`tunecost jobs ...` and `tunecost report` as subprocesses against a live API and worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.cli.jobs import _Progress, eta_seconds, snapshot
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.live_api import LiveApi
from tests.support import ROOT, ServiceEnv

pytestmark = pytest.mark.slow
WATCH_TIMEOUT_S = 480  # a training child's start-up on two busy cores, then a few steps
TINY = "tiny-llama-cli"


def _cli(live_api: LiveApi, key: str, *args: str, timeout: float = 120) -> Any:
    env = {**os.environ, "TUNECOST_URL": live_api.url, "TUNECOST_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_eta_is_the_step_rate_between_two_progress_events() -> None:
    first = {"step": 10, "total_steps": 110, "created_at": "2026-01-01T00:00:00Z"}
    last = {"step": 30, "total_steps": 110, "created_at": "2026-01-01T00:00:10Z"}
    assert eta_seconds(first, last) == pytest.approx(40.0)  # 2 steps/s, 80 steps left
    assert eta_seconds(first, first) is None
    snap = snapshot({"status": "running"}, _Progress(first=first, last=last))
    assert snap.percent == pytest.approx(100 * 30 / 110) and snap.eta_s == pytest.approx(40.0)


def test_jobs_need_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TUNECOST_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "jobs", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "TUNECOST_API_KEY" in done.stderr


def test_watch_follows_a_job_to_the_end_then_show_list_and_report(
    live_api: LiveApi,
    keys: dict[str, str],
    cpu_worker: Any,
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    if not (service_env.model_root / TINY / "config.json").exists():
        make_tiny_model(
            service_env.model_root / TINY,
            vocab_size=384,
            hidden_size=64,
            layers=2,
            heads=4,
            kv_heads=2,
        )
    data = make_tiny_dataset(tmp_path / "cli.jsonl", n=120, fmt="text")
    with live_api.client(keys["submit"]) as client, data.open("rb") as fh:
        ds = client.post(
            "/v1/datasets", files={"file": ("cli.jsonl", fh)}, data={"model_path": TINY}
        )
        assert ds.status_code == 201, ds.text
        job = client.post(
            "/v1/jobs",
            json={
                "method": "lora",
                "model": {"path": TINY},
                "dataset_id": ds.json()["id"],
                "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
                "hardware": {"gpu": "cpu", "provider": "aws"},
                "max_steps": 12,
                "max_cost_usd": 5,
                "tags": {"project": "cli-test"},
            },
        ).json()

    watched = _cli(
        live_api,
        keys["read"],
        "jobs",
        "watch",
        job["id"],
        "--interval",
        "0.5",
        timeout=WATCH_TIMEOUT_S,
    )
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = watched.stdout.splitlines()
    # Piped, it prints one line per change: the steps climb to the end with tokens/s and $.
    steps = [int(m.group(1)) for ln in lines if (m := re.search(r"step (\d+)/12", ln))]
    assert steps and steps[-1] == 12 and steps == sorted(steps)
    assert any(re.search(r"succeeded · step 12/12 · 100% · [\d,]+ tokens/s", ln) for ln in lines)
    assert re.search(r"\$0\.\d{4} of \$5\.00", watched.stdout)
    assert lines[-1] == f"job {job['id']} succeeded"

    shown = _cli(live_api, keys["read"], "jobs", "show", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and "GiB" in shown.stdout and "peak memory" in shown.stdout

    listed = _cli(live_api, keys["read"], "jobs", "list", "--tag", "project=cli-test")
    assert listed.returncode == 0 and job["id"] in listed.stdout

    report = _cli(live_api, keys["read"], "report", "--group-by", "tag:project")
    assert report.returncode == 0, report.stderr
    assert "cli-test" in report.stdout and "total" in report.stdout

    refused = _cli(live_api, keys["read"], "jobs", "cancel", job["id"])
    assert refused.returncode == 2 and "403" in refused.stderr  # a read key may not cancel
