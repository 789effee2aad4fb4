"""Studies: pilots of candidate methods on fractions of a dataset, fitted into a verdict.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 15:30:00

A study is a tenant's row like a job (team, creating key); its pilots are ordinary jobs, linked
one row each with the candidate and the data fraction they ran; the analysis (fitted curves,
predicted full-data loss and cost, frontier, recommendation) is stored on the study once every
pilot has ended.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_detail", sa.Text(), nullable=True),
        sa.Column("team", sa.String(length=200), nullable=True),
        sa.Column("created_by_key_id", sa.String(length=40), nullable=True),
        sa.Column("model_ref", sa.String(length=300), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=True),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("pilot_budget_usd", sa.Float(), nullable=False),
        sa.Column("est_pilot_cost_usd", sa.Float(), nullable=False),
        sa.Column("full_rows", sa.Integer(), nullable=False),
        sa.Column("eval_set_id", sa.String(length=64), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_key_id"],
            ["api_keys.id"],
            name=op.f("fk_studies_created_by_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_studies_dataset_id_datasets"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
    )
    op.create_index(op.f("ix_studies_status"), "studies", ["status"])
    op.create_index(op.f("ix_studies_team"), "studies", ["team"])
    op.create_index(op.f("ix_studies_dataset_id"), "studies", ["dataset_id"])
    op.create_index(op.f("ix_studies_created_at"), "studies", ["created_at"])
    op.create_table(
        "study_pilots",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("study_id", sa.String(length=40), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("estimate_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_study_pilots_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_study_pilots_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["estimate_id"],
            ["estimates.id"],
            name=op.f("fk_study_pilots_estimate_id_estimates"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_study_pilots")),
    )
    op.create_index(op.f("ix_study_pilots_study_id"), "study_pilots", ["study_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_study_pilots_study_id"), table_name="study_pilots")
    op.drop_table("study_pilots")
    op.drop_index(op.f("ix_studies_created_at"), table_name="studies")
    op.drop_index(op.f("ix_studies_dataset_id"), table_name="studies")
    op.drop_index(op.f("ix_studies_team"), table_name="studies")
    op.drop_index(op.f("ix_studies_status"), table_name="studies")
    op.drop_table("studies")
