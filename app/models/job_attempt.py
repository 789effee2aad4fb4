"""Attempts of a job: each time a worker claimed it, for how long, and what that attempt cost."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class JobAttempt(Base):
    """One attempt of a job on a worker. Every attempt is billed: the job's cost is their sum."""

    __tablename__ = "job_attempts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(primary_key=True)
    worker: Mapped[str | None] = mapped_column(String(300))
    started_at: Mapped[datetime]
    # The attempt's last sign of life (heartbeat), or its end once it ended.
    last_seen_at: Mapped[datetime]
    # running, then succeeded / failed / cancelled / budget_exceeded, or lost (its worker died).
    outcome: Mapped[str] = mapped_column(String(32))
    gpu_hours: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
