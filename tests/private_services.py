"""Private PostgreSQL and Redis servers for fault tests: ours to stop and restart, so a test can
kill a real service without disturbing the machine's shared ones."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed under /usr/lib/postgresql")
    return found[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI and sessions run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temp folder."""

    datadir: Path
    port: int

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", *args]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.datadir / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash-like stop)."""
        self._ctl("-m", mode, "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb a cluster in a new folder under /tmp, start it, and remove it afterwards."""
    # Its own top-level folder: pytest's tmp_path is root-only, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="tunecost-pg-"))
    base.chmod(0o755)
    datadir = base / "pgdata"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    pg = PrivatePostgres(datadir=datadir, port=free_port())
    pg.start()
    try:
        yield pg
    finally:
        with suppress(subprocess.CalledProcessError):
            pg.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A redis-server of our own, with an append-only file so a restart keeps queued messages."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait for PONG."""
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM; the append-only file is already on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@contextmanager
def private_redis(tmp: Path) -> Iterator[PrivateRedis]:
    """A private redis-server under `tmp`, stopped afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(workdir=tmp, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
