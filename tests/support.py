"""Helpers for tests: the service environment, cache resets and a real worker subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import Fernet

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServiceEnv:
    """Where the app under test keeps its state."""

    database_url: str
    broker_url: str
    storage_root: Path
    model_root: Path
    lock_dir: Path
    # The API and the workers must share it: it encrypts webhook secrets (app/webhooks/secrets.py).
    webhook_key: str = field(default_factory=lambda: Fernet.generate_key().decode())

    def variables(self) -> dict[str, str]:
        """The TUNECOST_* variables that point the app and workers here."""
        return {
            "TUNECOST_DATABASE_URL": self.database_url,
            "TUNECOST_BROKER_URL": self.broker_url,
            "TUNECOST_STORAGE_ROOT": str(self.storage_root),
            "TUNECOST_MODEL_ROOTS": str(self.model_root),
            # Device locks of this session's workers only: two suites on one machine never
            # wait on each other's CPU devices.
            "TUNECOST_WORKER_LOCK_DIR": str(self.lock_dir),
            "TUNECOST_HEARTBEAT_INTERVAL_S": "1",
            "TUNECOST_HEARTBEAT_STALE_S": "10",
            "TUNECOST_WEBHOOK_KEYS": self.webhook_key,
        }


def drop_database(conn: Any, name: str) -> None:
    """Drop a test database without ever hanging the run.

    DROP DATABASE ... WITH (FORCE) waits for every backend of the cluster to acknowledge a
    barrier; one stuck writing to a client that stopped reading holds it forever (seen here with
    an abandoned COPY stream). So: bounded wait, and a leftover database is only reported.
    """
    from sqlalchemy import text

    conn.execute(text("SET statement_timeout = '30s'"))
    try:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as exc:
        print(f"warning: could not drop test database {name}: {exc}", file=sys.stderr)


def force_avx512bf16(monkeypatch: Any, *, on: bool) -> None:
    """Make 4-bit layers built from now on believe the CPU has (or lacks) AVX512-BF16.

    bitsandbytes' `Linear4bit.__init__` reads `has_avx512bf16()` from its own module namespace
    into `support_avx512bf16_for_cpu`; patching that name reaches both branches on any CPU.
    """
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: on)


def clear_caches() -> None:
    """Forget cached settings, engines and the Celery client after the environment changed."""
    import app.catalog.service
    import app.kit.queue
    from app.config import get_settings
    from app.db import get_engine, get_sessionmaker

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    app.kit.queue._client = None
    app.catalog.service._effective = None  # keyed by version id only, not by database


@dataclass
class WorkerProcess:
    """A running `celery worker` subprocess."""

    proc: subprocess.Popen[bytes]
    hostname: str
    queue: str
    log: Path

    def output(self) -> str:
        """What the worker has logged so far."""
        return self.log.read_text(errors="replace")


@contextmanager
def pointed_at(variables: dict[str, str]) -> Iterator[None]:
    """Set these TUNECOST_* variables (and drop the cached settings, engine and broker) for the
    block, then put back what was there before."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    clear_caches()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_caches()


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def start_worker(
    env: ServiceEnv,
    *,
    gpu: str,
    hostname: str,
    log: Path,
    extra_env: dict[str, str] | None = None,
    concurrency: int | None = 1,
) -> Iterator[WorkerProcess]:
    """Start `celery -A worker.celery_app worker` for `gpu` and wait until its heartbeat shows.

    `concurrency=None` leaves the pool size to the worker (one process per device).
    """
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import WorkerNode

    proc_env = {**os.environ, **env.variables(), "TUNECOST_WORKER_GPU": gpu, **(extra_env or {})}
    queue = f"gpu.{gpu}"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--loglevel",
                "INFO",
                *(["--concurrency", str(concurrency)] if concurrency is not None else []),
                "-n",
                f"{hostname}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=proc_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    full_name = None

    def registered() -> bool:
        nonlocal full_name
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{log.read_text(errors='replace')}")
        with session_scope() as session:
            full_name = session.scalar(
                select(WorkerNode.hostname).where(WorkerNode.hostname.startswith(hostname))
            )
        return full_name is not None

    worker = WorkerProcess(proc=proc, hostname=hostname, queue=queue, log=log)
    try:
        wait_for(registered, timeout=60, what=f"worker {hostname} heartbeat")
        worker.hostname = full_name or hostname
        yield worker
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def start_control_worker(
    env: ServiceEnv,
    *,
    log: Path,
    extra_env: dict[str, str] | None = None,
    beat_schedule: Path | None = None,
) -> Iterator[WorkerProcess]:
    """`celery worker -Q tunecost.control` (webhook deliveries, the FOCUS delivery), with
    `celery beat` embedded (-B) when `beat_schedule` names its schedule file; waits until ready.
    """
    from app.kit.queue import CONTROL_QUEUE

    proc_env = {**os.environ, **env.variables(), **(extra_env or {})}
    hostname = f"control-{uuid.uuid4().hex[:6]}"
    beat = ["-B", "-s", str(beat_schedule)] if beat_schedule is not None else []
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-Q",
                CONTROL_QUEUE,
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "-n",
                f"{hostname}@%h",
                "--without-gossip",
                "--without-mingle",
                *beat,
            ],
            cwd=ROOT,
            env=proc_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{log.read_text(errors='replace')}")
        return " ready." in log.read_text(errors="replace")

    worker = WorkerProcess(proc=proc, hostname=hostname, queue=CONTROL_QUEUE, log=log)
    try:
        wait_for(ready, timeout=60, what=f"control worker {hostname}")
        yield worker
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
