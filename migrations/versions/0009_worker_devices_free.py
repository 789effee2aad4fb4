"""Workers report how many of their devices no job holds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:00:00

A worker runs several jobs at once on disjoint device sets; its heartbeat now says how many of
its devices are free. Rows written by older workers leave it empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("devices_free", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("devices_free")
