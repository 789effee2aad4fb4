"""Estimates carry their tenant: the team of the key that made them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:00:00

Existing estimates take the team of their creating key (none if the key is gone or team-less).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE estimates SET team = (SELECT api_keys.team FROM api_keys "
        "WHERE api_keys.id = estimates.created_by_key_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.drop_column("team")
