"""Estimates carry the hash of their content: an identical request of the same tenant and day
gets the stored estimate back instead of a new row.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:00:00

Existing estimates get no hash: they are never reused.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_estimates_content_hash"), ["content_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_estimates_content_hash"))
        batch_op.drop_column("content_hash")
