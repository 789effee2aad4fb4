"""Report rollups: an index for an admin's reports, which span every tenant.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 16:35:00

A team's report reads its rollup rows by the primary key (tenant, owner_key, dim, ...); an
admin's has no tenant to start from and read every rollup row before this index.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_report_rollups_dim_grain_bucket",
        "report_rollups",
        ["dim", "grain", "bucket_start"],
    )


def downgrade() -> None:
    op.drop_index("ix_report_rollups_dim_grain_bucket", table_name="report_rollups")
