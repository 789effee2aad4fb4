"""A live API for tests that need a real server: uvicorn on a free port, on the test services."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, ServiceEnv, wait_for


@dataclass
class LiveApi:
    """The API served by a real uvicorn process."""

    url: str
    log: Path
    pid: int

    def rss_bytes(self) -> int:
        """The server process's resident memory now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("the server's /proc status has no VmRSS")

    def client(self, secret: str) -> httpx.Client:
        """An HTTP client with `secret` as its key."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(variables: dict[str, str], log: Path) -> Iterator[LiveApi]:
    """`uvicorn app.main:create_app --factory` on a free port with these TUNECOST_* variables."""
    port = _free_port()
    env = {**os.environ, **variables}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    # As the Dockerfile and scripts/run.sh start it: no `server: uvicorn` banner.
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-server-header"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    api = LiveApi(url=f"http://127.0.0.1:{port}", log=log, pid=proc.pid)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{log.read_text(errors='replace')}")
        try:
            return httpx.get(f"{api.url}/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=180, interval=0.5, what="the live API")
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def live_api(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    """`uvicorn app.main:create_app --factory` on the test PostgreSQL and Redis."""
    log = tmp_path_factory.mktemp("api") / "uvicorn.log"
    with serve(service_env.variables(), log) as api:
        yield api
