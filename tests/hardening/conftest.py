"""An isolated, freshly migrated PostgreSQL database for tests that write freely (fuzzing)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL
from tests.support import ServiceEnv, clear_caches, drop_database


@pytest.fixture(scope="module")
def isolated_db(service_env: ServiceEnv) -> Iterator[str]:
    """Point the app at its own database for one module, then back at the session's."""
    from app.migrate import upgrade_head

    name = f"tunecost_iso_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade_head(url)
    os.environ["TUNECOST_DATABASE_URL"] = url
    clear_caches()
    yield url
    os.environ["TUNECOST_DATABASE_URL"] = service_env.database_url
    clear_caches()
    with admin.connect() as conn:
        drop_database(conn, name)
    admin.dispose()
