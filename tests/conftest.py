"""Shared fixtures: a fresh PostgreSQL database migrated by Alembic, real Redis, a real worker.

The services are required: a test that needs them fails (never skips) when they are unreachable.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.reports import rollups
from tests.support import ServiceEnv, clear_caches, drop_database, pointed_at, start_worker

# Tests write finished jobs themselves (tests/reports/factory.py), as the API and the workers
# do: like those processes, this one keeps the report rollups in each transaction.
rollups.track()

# live_api: a real uvicorn server on the test services, for the browser and CLI tests.
pytest_plugins = ["tests.live_api"]

# The environment the suite started with, before any fixture or test changed it: for a test that
# must run in a fresh interpreter exactly as it runs alone (tests/studies/test_real_study.py).
START_ENV = dict(os.environ)
PG_ADMIN_URL = os.environ.get(
    "TUNECOST_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TUNECOST_TEST_REDIS_URL", "redis://127.0.0.1:6379")


# This session's migrated template database, made on first use: every database the tests need
# is a copy of it (CREATE DATABASE ... TEMPLATE copies files: a fraction of a second, where
# running the migrations takes seconds each time). Dropped with the session's database.
_TEMPLATE: list[str] = []


def _create_database(name: str, *, template: str | None = None) -> str:
    """Create database `name` (a copy of `template` if given); returns its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is required for the tests and unreachable at {PG_ADMIN_URL}: {exc}"
        )
    finally:
        admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _create_migrated_database(prefix: str) -> tuple[str, str]:
    """A new PostgreSQL database at the schema head; returns (name, url)."""
    from app.kit.migrate import upgrade_head

    if not _TEMPLATE:
        template = f"tunecost_tmpl_{uuid.uuid4().hex[:12]}"
        upgrade_head(_create_database(template))  # its engine is disposed: nobody stays on it
        _TEMPLATE.append(template)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    return name, _create_database(name, template=_TEMPLATE[0])


def _drop(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        drop_database(conn, name)
    admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test session, migrated to head."""
    name, url = _create_migrated_database("tunecost_test")
    yield url
    _drop(name)
    for template in _TEMPLATE:
        _drop(template)


def _claim_redis_db() -> int:
    """A Redis database index (1-15) no other test session on this machine holds.

    Each index is claimed by an advisory lock held until `_release_redis_db` or the end of the
    session (the kernel drops it when the process ends), so two suites run at once never flush
    each other's queues.
    """
    order = list(range(1, 16))
    random.shuffle(order)
    for index in order:
        fh = open(Path(tempfile.gettempdir()) / f"tunecost-test-redis-db-{index}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        _HELD_LOCKS[index] = fh
        return index
    pytest.fail("every Redis database 1-15 is held by another test session on this machine")


def _release_redis_db(index: int) -> None:
    """Give back a Redis database claimed with `_claim_redis_db`."""
    _HELD_LOCKS.pop(index).close()


_HELD_LOCKS: dict[int, IO[str]] = {}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of this session's own (see _claim_redis_db), emptied first."""
    import redis

    url = f"{REDIS_URL.rstrip('/')}/{_claim_redis_db()}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is required for the tests and unreachable at {url}: {exc}")
    client.flushdb()
    return url


@pytest.fixture(scope="session")
def service_env(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    """TUNECOST_* pointed at the test PostgreSQL, Redis and temporary folders."""
    root = tmp_path_factory.mktemp("tunecost")
    env = ServiceEnv(
        database_url=pg_url,
        broker_url=redis_url,
        storage_root=root / "storage",
        model_root=root / "models",
        lock_dir=root / "device-locks",
    )
    env.model_root.mkdir()
    with pointed_at(env.variables()):
        yield env


@pytest.fixture(scope="session")
def app_client(service_env: ServiceEnv) -> Iterator[object]:
    """A TestClient over the real app, on the test PostgreSQL."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def key_per_scope(name: str, *, team: str = "ml") -> dict[str, str]:
    """One new key per scope in the current database, by scope; read and submit of `team`."""
    from app.auth import service
    from app.db import session_scope
    from app.models import Scope

    out = {}
    with session_scope() as session:
        for scope in Scope:
            # One tenant: the read key sees what the submit key made (tenancy, app/auth/tenancy).
            owner = None if scope == Scope.ADMIN else team
            _, secret = service.create(session, name=f"{name} {scope}", scope=scope, team=owner)
            out[scope.value] = secret
    return out


@pytest.fixture(scope="session")
def keys(service_env: ServiceEnv) -> dict[str, str]:
    """One secret per scope: read, submit, admin (read and submit of team 'ml'; admin none)."""
    return key_per_scope("test")


def auth(secret: str) -> dict[str, str]:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="session")
def cpu_worker(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """A real Celery worker process on Redis, consuming the `gpu.cpu` queue."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with start_worker(service_env, gpu="cpu", hostname=f"cpu-{uuid.uuid4().hex[:6]}", log=log) as w:
        yield w


@pytest.fixture(scope="module")
def isolated_db(service_env: ServiceEnv) -> Iterator[str]:
    """Point the app at its own fresh database for one module, then back at the session's."""
    name, url = _create_migrated_database("tunecost_iso")
    os.environ["TUNECOST_DATABASE_URL"] = url
    clear_caches()
    yield url
    os.environ["TUNECOST_DATABASE_URL"] = service_env.database_url
    clear_caches()
    _drop(name)


@pytest.fixture(scope="module")
def isolated_services(isolated_db: str, service_env: ServiceEnv) -> Iterator[ServiceEnv]:
    """The module's own database and an emptied Redis database of its own as the broker.

    A worker on the session's database (`cpu_worker`) consumes the same queue names: on the
    session's broker it would take this module's jobs, find no such job in its database and
    drop them. The app and the workers the module starts on this env use the private broker.
    """
    index = _claim_redis_db()  # never one another session (or this one) uses
    broker = f"{REDIS_URL.rstrip('/')}/{index}"
    redis.Redis.from_url(broker).flushdb()
    try:
        with pointed_at({"TUNECOST_BROKER_URL": broker}):
            yield replace(service_env, database_url=isolated_db, broker_url=broker)
    finally:
        _release_redis_db(index)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file URL in a temporary folder (not migrated)."""
    return f"sqlite:///{tmp_path / 'tunecost.db'}"
