"""Points of a job's eval curve: the held-out set scored at a step, with per-item losses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType


class JobEval(Base):
    """One evaluation of a job's model on its held-out set (step 0 is the base model)."""

    __tablename__ = "job_evals"
    # The evidence for a verdict: final evaluations of the jobs scored on one eval set.
    __table_args__ = (Index("ix_job_evals_set_final", "eval_set_id", "final"),)

    # SQLite only autoincrements INTEGER primary keys; PostgreSQL gets a BIGINT identity.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    created_at: Mapped[datetime]
    step: Mapped[int]
    total_steps: Mapped[int]
    tokens: Mapped[int] = mapped_column(BigInteger)
    elapsed_s: Mapped[float] = mapped_column(Float)
    accrued_cost_usd: Mapped[float] = mapped_column(Float)
    final: Mapped[bool] = mapped_column(Boolean)
    eval_set_id: Mapped[str] = mapped_column(String(64))
    loss: Mapped[float] = mapped_column(Float)
    loss_se: Mapped[float | None] = mapped_column(Float)
    token_accuracy: Mapped[float | None] = mapped_column(Float)
    items: Mapped[int]
    loss_tokens: Mapped[int] = mapped_column(BigInteger)
    # Per item, in eval-set order: what paired comparisons between jobs are computed from.
    item_loss_sums: Mapped[list[Any]] = mapped_column(JSONType)
    item_tokens: Mapped[list[Any]] = mapped_column(JSONType)
