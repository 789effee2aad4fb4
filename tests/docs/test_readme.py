"""The README's command blocks run as pasted against a live server and a real worker.

`make run` is stood in for by the live_api and cpu_worker fixtures (the same uvicorn app and
Celery worker, on the test PostgreSQL and Redis). Each marked block runs with bash -e in a
scratch folder laid out like a clone: `.venv/bin/tunecost` runs this checkout's CLI and
`var/models` is the server's model root. Only `TUNECOST_URL` and the TUNECOST_* service variables
differ from a fresh `make run`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.live_api import LiveApi
from tests.support import ROOT, ServiceEnv

pytestmark = pytest.mark.slow
BLOCK = re.compile(r"(?P<marker><!-- readme-test:[^\n]*-->\n)?```bash\n(?P<body>.*?)```", re.S)
# The one block not run here: `make run` / `make test` themselves (the fixtures stand in).
SETUP_BLOCK = "make run    # install what is missing"
BLOCK_TIMEOUT_S = 900  # the walk-throughs train two LoRA jobs: a child's start-up on busy cores


def _blocks() -> list[tuple[bool, str]]:
    text = (ROOT / "README.md").read_text()
    return [(m["marker"] is not None, m["body"]) for m in BLOCK.finditer(text)]


def _clone_like(tmp: Path, env: ServiceEnv) -> Path:
    """A folder where `.venv/bin/tunecost` and `var/models` mean what they do in a clone."""
    bin_dir = tmp / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    cli = bin_dir / "tunecost"
    cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app.cli.main "$@"\n')
    cli.chmod(0o755)
    (tmp / "var").mkdir()
    (tmp / "var" / "models").symlink_to(env.model_root)
    return tmp


def test_every_bash_block_but_setup_is_marked_to_run() -> None:
    blocks = _blocks()
    assert len(blocks) >= 3
    for marked, body in blocks:
        assert marked or SETUP_BLOCK in body, f"README block not run by this test:\n{body}"


def test_readme_blocks_run_as_pasted(
    live_api: LiveApi, cpu_worker: Any, service_env: ServiceEnv, tmp_path: Path
) -> None:
    cwd = _clone_like(tmp_path, service_env)
    env = {
        **os.environ,
        **service_env.variables(),
        "TUNECOST_URL": live_api.url,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    env.pop("TUNECOST_API_KEY", None)
    # One shell for all blocks, in order, as a reader pastes them into one terminal.
    script = "set -euo pipefail\n" + "\n".join(body for marked, body in _blocks() if marked)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert '"Unauthorized"' in done.stdout and '"scope": "submit"' in done.stdout
    # the curl walk-through's job and the CLI-only one's both train to the end
    assert len(re.findall(r"job job_[0-9a-f]{32} succeeded", done.stdout)) == 2, out
    assert re.search(r"dataset ds_[0-9a-f]{32} \(chat\.jsonl\)\n200 examples \(chat\)", done.stdout)
    assert re.search(r"│ job_[0-9a-f]{32} │ succeeded │ lora .*│\n", done.stdout), out
    assert (cwd / "adapter.tar").stat().st_size > 0
    assert "BilledCost" in (cwd / "focus.csv").read_text()
    assert "BilledCost" in done.stdout and "Estimate vs actual" in done.stdout
    assert "pip install kernels" not in out and "FutureWarning" not in out
