"""A real API server (uvicorn in a subprocess) on its own PostgreSQL database, for load tests.

The server is a separate process so that what is measured is what a client meets: its own
connection pool, its own threads and memory, real sockets that clients can drop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.auth import service as keys_service
from app.models import Scope
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import _create_migrated_database, _drop
from tests.private_services import free_port
from tests.support import ROOT, ServiceEnv, wait_for

TINY = "tiny-reliability"
# The first request of a fresh server may import torch/transformers: allow for a busy machine.
START_TIMEOUT_S = 180
ESTIMATE_SLOTS = 1
ESTIMATE_QUEUE = 4
EXPORT_SLOTS = 4  # the default, stated so the tests can count on it


@dataclass
class LiveApi:
    """A running API server: where it listens, its process, its database and two keys."""

    base: str
    proc: subprocess.Popen[bytes]
    db_name: str
    db_url: str
    submit: dict[str, str]
    read: dict[str, str]
    dataset_id: str
    log: Path

    def rss_bytes(self) -> int:
        """The server process's resident memory."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's log, minus access lines (for failure messages)."""
        text_ = self.log.read_text(errors="replace").splitlines()
        return "\n".join([t for t in text_ if not t.startswith("INFO:")][-lines:])

    def backends(self) -> list[dict[str, object]]:
        """This database's client backends other than ours: state, wait event and query."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT pid, state, wait_event, left(query, 80) AS query, "
                        "extract(epoch FROM now() - state_change) AS for_s "
                        "FROM pg_stat_activity WHERE datname = current_database() "
                        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    )
                ).mappings()
                return [dict(r) for r in rows]
        finally:
            engine.dispose()


def _keys(db_url: str) -> tuple[str, str]:
    engine = create_engine(db_url)
    with Session(engine) as session:
        _, submit = keys_service.create(session, name="rel submit", scope=Scope.SUBMIT, team="ml")
        _, read = keys_service.create(session, name="rel read", scope=Scope.READ, team="ml")
        session.commit()
    engine.dispose()
    return submit, read


@pytest.fixture(scope="session")
def live_api(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    """uvicorn serving app.main on a free port, on a fresh migrated database, with a dataset."""
    name, url = _create_migrated_database("tunecost_rel")
    submit, read = _keys(url)
    tmp = tmp_path_factory.mktemp("live")
    if not (service_env.model_root / TINY / "config.json").exists():
        make_tiny_model(service_env.model_root / TINY, vocab_size=384, hidden_size=64, layers=2)
    port = free_port()
    env = {
        **os.environ,
        **service_env.variables(),
        "TUNECOST_DATABASE_URL": url,
        # One estimate at a time and a short queue, so that a burst meets the limiter.
        "TUNECOST_ESTIMATE_SLOTS": str(ESTIMATE_SLOTS),
        "TUNECOST_ESTIMATE_QUEUE": str(ESTIMATE_QUEUE),
        "TUNECOST_EXPORT_SLOTS": str(EXPORT_SLOTS),
    }
    log = tmp / "uvicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{log.read_text(errors='replace')}")
        try:
            return httpx.get(f"{base}/v1/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=START_TIMEOUT_S, what="the API server")
        data = make_tiny_dataset(tmp / "data.jsonl", n=60, fmt="text")
        with data.open("rb") as fh:
            r = httpx.post(
                f"{base}/v1/datasets",
                files={"file": ("data.jsonl", fh, "application/x-ndjson")},
                data={"name": "rel", "model_path": TINY},
                headers={"Authorization": f"Bearer {submit}"},
                timeout=START_TIMEOUT_S,
            )
        assert r.status_code == 201, r.text
        yield LiveApi(
            base=base,
            proc=proc,
            db_name=name,
            db_url=url,
            submit={"Authorization": f"Bearer {submit}"},
            read={"Authorization": f"Bearer {read}"},
            dataset_id=str(r.json()["id"]),
            log=log,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # noted by the shutdown test; never leave a server behind
            proc.wait()
        _drop(name)
