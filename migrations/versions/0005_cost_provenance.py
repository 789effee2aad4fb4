"""Cost provenance on jobs: who pays for the device time, the internal rate, region and offer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 15:00:00

Jobs that already ran get a provenance from what was recorded: a CPU run (or one with no
provider) was self-hosted, at the default CPU internal rate of the time; any other was billed by
its priced provider. The report index gains the columns the billed/effective sums read.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app/jobs/provenance.py default for a CPU box when this migration was written: 150 W at
# 0.13 USD/kWh. Written out so the migration never changes with the application code.
CPU_RATE_AT_MIGRATION = 0.0195
OLD_REPORT_COLUMNS = [
    "id",
    "method",
    "gpu",
    "model_ref",
    "provider",
    "status",
    "team",
    "est_cost_usd",
    "act_cost_usd",
    "est_gpu_hours",
    "act_gpu_hours",
    "est_peak_bytes",
    "act_peak_bytes",
]
REPORT_COLUMNS = [
    *OLD_REPORT_COLUMNS,
    "cost_source",
    "price_per_gpu_hour",
    "internal_usd_per_gpu_hour",
]


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("billing_provider", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("internal_usd_per_gpu_hour", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("region", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sku", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("list_price_reference", sa.String(length=300), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_cost_source"), ["cost_source"], unique=False)
        batch_op.drop_index("ix_jobs_report")
        batch_op.create_index(
            "ix_jobs_report", ["finished_at"], unique=False, postgresql_include=REPORT_COLUMNS
        )
    op.execute(
        "UPDATE jobs SET cost_source = 'self_hosted', "
        f"internal_usd_per_gpu_hour = CASE WHEN gpu = 'cpu' THEN {CPU_RATE_AT_MIGRATION} END "
        "WHERE started_at IS NOT NULL AND (gpu = 'cpu' OR provider IS NULL)"
    )
    op.execute(
        "UPDATE jobs SET cost_source = 'cloud', billing_provider = provider "
        "WHERE started_at IS NOT NULL AND cost_source IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_report")
        batch_op.create_index(
            "ix_jobs_report", ["finished_at"], unique=False, postgresql_include=OLD_REPORT_COLUMNS
        )
        batch_op.drop_index(batch_op.f("ix_jobs_cost_source"))
        for column in (
            "list_price_reference",
            "sku",
            "region",
            "internal_usd_per_gpu_hour",
            "billing_provider",
            "cost_source",
        ):
            batch_op.drop_column(column)
