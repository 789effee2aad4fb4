"""Studies: complete short pilots of candidate methods on fractions of a dataset, and a verdict."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdStr, JSONType, TimestampMixin


class StudyStatus(StrEnum):
    """Life of a study: its pilots run, then it is analysed (or cancelled, or all pilots failed)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Study(TimestampMixin, Base):
    """One study: what was asked (`spec`), its pilots' progress, and the analysis (`result`)."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    status: Mapped[StudyStatus] = mapped_column(String(32), index=True)
    status_detail: Mapped[str | None] = mapped_column(Text)
    team: Mapped[str | None] = mapped_column(String(200), index=True)
    created_by_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    model_ref: Mapped[str] = mapped_column(String(300))
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True
    )
    # The validated request (app/studies/schemas.py StudyIn), as JSON.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    pilot_budget_usd: Mapped[float] = mapped_column(Float)
    est_pilot_cost_usd: Mapped[float] = mapped_column(Float)
    # Training examples of the whole dataset (after the held-out set): the "full data" size.
    full_rows: Mapped[int] = mapped_column(Integer)
    eval_set_id: Mapped[str | None] = mapped_column(String(64))
    finished_at: Mapped[datetime | None]
    # The analysis once every pilot ended (app/studies/schemas.py StudyAnalysis), as JSON.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class StudyPilot(Base):
    """One pilot of a study: a job of one candidate on one fraction of the data."""

    __tablename__ = "study_pilots"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    candidate: Mapped[int] = mapped_column(Integer)  # index into the spec's candidates
    fraction: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)  # training examples the pilot trains on
    # The estimate of the candidate on the whole data, shared by its pilots.
    estimate_id: Mapped[str | None] = mapped_column(ForeignKey("estimates.id", ondelete="SET NULL"))
