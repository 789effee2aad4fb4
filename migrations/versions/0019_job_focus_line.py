"""Jobs: each finished job's FOCUS CSV line, written once and copied by every export.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 19:20:00

The export computed every record's 56 cells again on every run (most of its time). The flush
listener of app/reports/rollups.py now stores a job's line (`focus_line`) with the fingerprint of
the definition and settings that wrote it (`focus_key`); the export copies lines whose key is
today's and computes the others (app/reports/focus_pg.py). On PostgreSQL a trigger clears the
line when an UPDATE changes a column it is made from, so a write that bypasses the listener
leaves the line missing (computed at export), never stale. Not backfilled here: existing jobs'
lines are computed at export until the listener or `rollups.rebuild` writes them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The jobs columns a FOCUS line is made from (app/reports/focus_columns.py, as of this revision;
# tests/reports/test_focus_pg.py checks the trigger covers every column the record reads).
INPUTS = (
    "id", "status", "method", "model_ref", "gpu", "num_gpus", "pricing", "team",
    "estimate_snapshot", "price_per_gpu_hour", "est_cost_usd", "est_gpu_hours", "started_at",
    "finished_at", "act_gpu_hours", "act_cost_usd", "cost_source", "billing_provider",
    "internal_usd_per_gpu_hour", "region", "sku", "list_price_reference", "tags_text",
)  # fmt: skip
FUNCTION = "jobs_focus_line_stale"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("focus_line", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("focus_key", sa.String(16), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's export writes CSV in Python and never reads stored lines
    old = ", ".join(f"OLD.{c}" for c in INPUTS)
    new = ", ".join(f"NEW.{c}" for c in INPUTS)
    op.execute(
        f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN NEW.focus_line := NULL; NEW.focus_key := NULL; RETURN NEW; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {FUNCTION} BEFORE UPDATE ON jobs FOR EACH ROW "
        "WHEN (OLD.focus_line IS NOT NULL "
        "AND NEW.focus_line IS NOT DISTINCT FROM OLD.focus_line "
        f"AND ({old}) IS DISTINCT FROM ({new})) "
        f"EXECUTE FUNCTION {FUNCTION}()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {FUNCTION} ON jobs")
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("focus_key")
        batch.drop_column("focus_line")
