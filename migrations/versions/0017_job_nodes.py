"""Jobs across nodes: a job's node count, and the seats of the workers that run its nodes.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 15:40:00

`jobs.nodes` is how many worker nodes a job spans (1 for every job written before); `job_seats`
holds one row per node of a multi-node job while its gang forms and runs (app/jobs/gang.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "job_seats",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("node_index", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_seats_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "node_index", name=op.f("pk_job_seats")),
    )


def downgrade() -> None:
    op.drop_table("job_seats")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("nodes")
