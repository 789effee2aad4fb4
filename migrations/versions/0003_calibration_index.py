"""Calibration index: the newest succeeded runs per (GPU, method), in the order the fit ranks them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 20:55:00

Partial (status = 'succeeded') on both databases; the fit's window functions (partitioned by
GPU and method, ordered by finish time) then read it in order instead of sorting the jobs table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUCCEEDED = sa.text("status = 'succeeded'")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_calibration",
            ["gpu", "method", "finished_at", "id"],
            unique=False,
            postgresql_where=SUCCEEDED,
            sqlite_where=SUCCEEDED,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_calibration")
