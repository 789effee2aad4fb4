"""Alembic is the only way the schema is made: it must work on SQLite and PostgreSQL alike."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.kit.migrate import downgrade_base, upgrade_head
from app.models import Base

EXPECTED_TABLES = {
    "alembic_version",
    "api_keys",
    "catalog_versions",
    "datasets",
    "estimates",
    "jobs",
    "job_events",
    "job_tags",
    "price_overrides",
    "workers",
}


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    return list(diff)


def test_sqlite_upgrade_matches_models_and_downgrades(sqlite_url: str) -> None:
    upgrade_head(sqlite_url)
    engine = create_engine(sqlite_url)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM catalog_versions")).scalar() == 1
    engine.dispose()
    assert _schema_diff(sqlite_url) == []
    downgrade_base(sqlite_url)
    engine = create_engine(sqlite_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_postgres_upgrade_matches_models(pg_url: str) -> None:
    engine = create_engine(pg_url)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    engine.dispose()
    assert _schema_diff(pg_url) == []
