"""Run Alembic from code (tests, `tunecost migrate`): the schema only ever changes this way."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None) -> Config:
    """The repository's alembic.ini, pointed at `database_url` (default: the settings')."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["configure_logger"] = False
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def upgrade_head(database_url: str | None = None) -> None:
    """Bring the database to the newest revision."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_base(database_url: str | None = None) -> None:
    """Undo every migration (used by the migration round-trip test)."""
    command.downgrade(alembic_config(database_url), "base")
