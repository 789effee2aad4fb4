"""Report indexes: a covering index of the jobs columns reports read, and tags with their job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 20:40:00

On PostgreSQL `ix_jobs_report` carries the grouped, filtered and summed columns (INCLUDE) so the
estimate-vs-actual and spend reports are index-only scans instead of scans of the wide job rows;
SQLite has no INCLUDE and gets a plain index on finished_at. `ix_job_tags_key_value_job` replaces
`ix_job_tags_key_value`: the same prefix, plus the job id that tag joins and filters need.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPORT_COLUMNS = [
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


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_report", ["finished_at"], unique=False, postgresql_include=REPORT_COLUMNS
        )
    with op.batch_alter_table("job_tags", schema=None) as batch_op:
        batch_op.create_index("ix_job_tags_key_value_job", ["key", "value", "job_id"], unique=False)
        batch_op.drop_index("ix_job_tags_key_value")


def downgrade() -> None:
    with op.batch_alter_table("job_tags", schema=None) as batch_op:
        batch_op.create_index("ix_job_tags_key_value", ["key", "value"], unique=False)
        batch_op.drop_index("ix_job_tags_key_value_job")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_report")
