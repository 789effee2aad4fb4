"""Report rollups: per tenant, UTC day or month, method, status and group, the report figures.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 16:00:00

Reports read them for the whole days and months of a window instead of every job
(app/reports/rollups.py keeps them in the transactions that write jobs). A database that already
holds finished jobs gets its rollups computed here from them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The figures' columns at this revision (app/models/report_rollup.py).
COUNT_COLUMNS = (
    "jobs",
    "spend_n",
    "cost_usd_n",
    "cost_usd_n_rel",
    "gpu_hours_n",
    "gpu_hours_n_rel",
    "peak_bytes_n",
    "peak_bytes_n_rel",
    "peak_vs_allocated",
    "peak_vs_per_gpu",
    "gpu_hours_all_n",
    "est_cost_all_n",
)
SUM_COLUMNS = (
    "spend_usd",
    "billed_usd",
    "effective_usd",
    "cost_usd_est",
    "cost_usd_act",
    "cost_usd_rel",
    "cost_usd_abs_rel",
    "gpu_hours_est",
    "gpu_hours_act",
    "gpu_hours_rel",
    "gpu_hours_abs_rel",
    "peak_bytes_est",
    "peak_bytes_act",
    "peak_bytes_rel",
    "peak_bytes_abs_rel",
    "gpu_hours_all",
    "est_cost_all",
)


def upgrade() -> None:
    op.create_table(
        "report_rollups",
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("owner_key", sa.String(40), nullable=False),
        sa.Column("grain", sa.String(8), nullable=False),
        sa.Column("bucket_start", sa.Date(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("dim", sa.String(110), nullable=False),
        sa.Column("value", sa.String(300), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNT_COLUMNS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in SUM_COLUMNS),
        sa.PrimaryKeyConstraint(
            "tenant",
            "owner_key",
            "dim",
            "grain",
            "bucket_start",
            "method",
            "status",
            "value",
            name="pk_report_rollups",
        ),
    )
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM jobs WHERE finished_at IS NOT NULL LIMIT 1")).first():
        from app.reports import rollups  # the one definition of the figures, at this revision

        rollups.rebuild(bind)


def downgrade() -> None:
    op.drop_table("report_rollups")
