"""The organisation's rate card: negotiated rates per provider GPU or instance.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_card_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("gpu", sa.String(length=64), nullable=True),
        sa.Column("instance", sa.String(length=200), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("pricing", sa.String(length=16), nullable=True),
        sa.Column("discount_pct", sa.Float(), nullable=True),
        sa.Column("contracted_usd_per_gpu_hour", sa.Float(), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("commitment_id", sa.String(length=200), nullable=True),
        sa.Column("uploaded_by", sa.String(length=100), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_card_lines")),
    )


def downgrade() -> None:
    op.drop_table("rate_card_lines")
