"""Job eval curves: the held-out set scored at intervals, with per-item losses.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:00:00

Each job's eval loss was one number at its end; now every evaluation (the base model, points
during the run, the end) is a row with its standard error, token accuracy, cost so far and the
per-item losses that paired comparisons between jobs on the same eval set are computed from.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_evals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("elapsed_s", sa.Float(), nullable=False),
        sa.Column("accrued_cost_usd", sa.Float(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("eval_set_id", sa.String(length=64), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("loss_se", sa.Float(), nullable=True),
        sa.Column("token_accuracy", sa.Float(), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("loss_tokens", sa.BigInteger(), nullable=False),
        sa.Column("item_loss_sums", JSON, nullable=False),
        sa.Column("item_tokens", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_evals_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_evals")),
    )
    op.create_index(op.f("ix_job_evals_job_id"), "job_evals", ["job_id"])
    op.create_index("ix_job_evals_set_final", "job_evals", ["eval_set_id", "final"])


def downgrade() -> None:
    op.drop_index("ix_job_evals_set_final", table_name="job_evals")
    op.drop_index(op.f("ix_job_evals_job_id"), table_name="job_evals")
    op.drop_table("job_evals")
