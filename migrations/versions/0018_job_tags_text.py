"""Jobs: their tags as one JSON object text, as the FOCUS export writes them.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 17:05:00

The export aggregated each job's tag rows again on every run (about a fifth of its time); the
flush listener of app/reports/rollups.py now keeps the text on the job. Backfilled here from
the tag rows, keys in order, as the export wrote them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("tags_text", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        found = (
            "SELECT json_object(array_agg(key ORDER BY key), array_agg(value ORDER BY key))::text"
        )
    else:
        found = "SELECT json_group_object(key, value)"  # in primary-key (job_id, key) order
    op.execute(
        f"UPDATE jobs SET tags_text = ({found} FROM job_tags WHERE job_tags.job_id = jobs.id) "
        "WHERE EXISTS (SELECT 1 FROM job_tags WHERE job_tags.job_id = jobs.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("tags_text")
