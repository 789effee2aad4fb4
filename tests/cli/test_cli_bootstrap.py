"""`tunecost bootstrap` (the container's start): migrate, and an admin key only when wanted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

KEY = re.compile(r"^tc_\S+$", re.M)


def _bootstrap(db: Path, **env: str) -> str:
    variables = {**os.environ, "TUNECOST_DATABASE_URL": f"sqlite:///{db}", **env}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "bootstrap"],
        cwd=ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_bootstrap_prints_one_admin_key_unless_turned_off(tmp_path: Path) -> None:
    db = tmp_path / "tc.db"
    off = _bootstrap(db, TUNECOST_BOOTSTRAP_ADMIN_KEY="false")
    assert not KEY.search(off) and "TUNECOST_BOOTSTRAP_ADMIN_KEY is off" in off
    first = _bootstrap(db)
    assert len(KEY.findall(first)) == 1, first
    assert not KEY.search(_bootstrap(db))  # a key exists now: none is made again
