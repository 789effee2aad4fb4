"""Fine-tune jobs: the request, the estimate snapshot, the metered actuals and their errors."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdStr, JSONType, TimestampMixin


class CostSource(StrEnum):
    """Who pays for a job's device time (README "Cost provenance")."""

    CLOUD = "cloud"  # a provider invoices the GPU time: billed = metered cost
    SELF_HOSTED = "self_hosted"  # own hardware: billed 0, effective at an internal rate


class JobStatus(StrEnum):
    """Life of a job: queued → running → one of the final states."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCEL_REQUESTED = "cancel_requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to a job in this state."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.BUDGET_EXCEEDED}
)
# The others, listed so a query reads the status index (`status IN (...)`): a tenant's unfinished
# jobs are few, its finished ones may be millions.
UNFINISHED_STATUSES = tuple(s for s in JobStatus if s not in FINAL_STATUSES)


# Columns the reports read besides finished_at (covered by ix_jobs_report on PostgreSQL).
REPORT_COLUMNS = (
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
    "est_allocated_bytes",
    "act_peak_bytes",
    "act_peak_kind",
    "cost_source",
    "price_per_gpu_hour",
    "internal_usd_per_gpu_hour",
)


class Job(TimestampMixin, Base):
    """One fine-tune run. Estimated (`est_*`) and actual (`act_*`) figures sit side by side."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("created_by_key_id", "idempotency_key"),
        Index("ix_jobs_finished_method_gpu", "finished_at", "method", "gpu"),
        # Reports (app/reports): every column they group, filter or sum, so PostgreSQL answers
        # them from this index alone instead of scanning the wide rows (estimate JSON inline).
        Index("ix_jobs_report", "finished_at", postgresql_include=list(REPORT_COLUMNS)),
        # Calibration (app/calibration): the newest succeeded runs per (GPU, method).
        Index(
            "ix_jobs_calibration",
            "gpu",
            "method",
            "finished_at",
            "id",
            postgresql_where=text("status = 'succeeded'"),
            sqlite_where=text("status = 'succeeded'"),
        ),
    )

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    status: Mapped[JobStatus] = mapped_column(String(32), index=True)
    status_detail: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(16), index=True)
    model_ref: Mapped[str] = mapped_column(String(300), index=True)
    gpu: Mapped[str] = mapped_column(String(64), index=True)
    num_gpus: Mapped[int]  # over every node
    nodes: Mapped[int] = mapped_column(default=1, server_default="1")
    provider: Mapped[str | None] = mapped_column(String(64), index=True)
    pricing: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(100))
    team: Mapped[str | None] = mapped_column(String(200), index=True)

    estimate_id: Mapped[str | None] = mapped_column(ForeignKey("estimates.id", ondelete="SET NULL"))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    created_by_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))

    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    estimate_snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType)
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    max_steps: Mapped[int | None]
    price_per_gpu_hour: Mapped[float] = mapped_column(Float)

    est_cost_usd: Mapped[float | None] = mapped_column(Float)
    est_gpu_hours: Mapped[float | None] = mapped_column(Float)
    # what must fit on one GPU (allocated + allocator slack + CUDA context), and the estimate's
    # torch.cuda.max_memory_allocated / max_memory_reserved beside it
    est_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    est_allocated_bytes: Mapped[int | None] = mapped_column(BigInteger)
    est_reserved_bytes: Mapped[int | None] = mapped_column(BigInteger)
    est_artifact_bytes: Mapped[int | None] = mapped_column(BigInteger)

    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)

    act_wall_s: Mapped[float | None] = mapped_column(Float)
    act_gpu_hours: Mapped[float | None] = mapped_column(Float)
    act_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    act_peak_kind: Mapped[str | None] = mapped_column(String(32))
    act_reserved_bytes: Mapped[int | None] = mapped_column(BigInteger)  # max_memory_reserved
    act_device_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)  # NVML, with context
    act_tokens: Mapped[int | None] = mapped_column(BigInteger)
    act_tokens_per_s: Mapped[float | None] = mapped_column(Float)
    act_mfu: Mapped[float | None] = mapped_column(Float)
    act_energy_kwh: Mapped[float | None] = mapped_column(Float)
    act_cost_usd: Mapped[float | None] = mapped_column(Float)  # at the reference list price
    # Cost provenance, stamped by the worker that claims the job (app/jobs/provenance.py).
    cost_source: Mapped[CostSource | None] = mapped_column(String(16), index=True)
    billing_provider: Mapped[str | None] = mapped_column(String(64))  # cloud: who invoices
    internal_usd_per_gpu_hour: Mapped[float | None] = mapped_column(Float)  # self-hosted rate
    region: Mapped[str | None] = mapped_column(String(64))
    sku: Mapped[str | None] = mapped_column(String(200))  # the priced offer, e.g. p4d.24xlarge
    list_price_reference: Mapped[str | None] = mapped_column(String(300))
    eval_loss: Mapped[float | None] = mapped_column(Float)
    artifact_path: Mapped[str | None] = mapped_column(String(1000))
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger)
    actuals: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    errors: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The job's tags as a JSON object text, keys in order, as the FOCUS export writes them
    # (null: no tags); kept by the flush listener of app/reports/rollups.py.
    tags_text: Mapped[str | None] = mapped_column(Text)
    # The job's FOCUS CSV line and the fingerprint of the definition and settings that wrote it
    # (app/reports/focus_pg.py; PostgreSQL only). Written by the flush listener, cleared by a
    # trigger when a column it is made from changes; never loaded with the job.
    focus_line: Mapped[str | None] = mapped_column(Text, deferred=True)
    focus_key: Mapped[str | None] = mapped_column(String(16), deferred=True)


class JobTag(Base):
    """A cost-allocation tag of a job (team, project, ...), one row per key, indexed for reports."""

    __tablename__ = "job_tags"
    # (key, value, job_id): tag filters and tag grouping read only this index.
    __table_args__ = (Index("ix_job_tags_key_value_job", "key", "value", "job_id"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(300))


class JobEvent(Base):
    """Progress and status events of a job, in order."""

    __tablename__ = "job_events"

    # SQLite only autoincrements INTEGER primary keys; PostgreSQL gets a BIGINT identity.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[int | None]
    total_steps: Mapped[int | None]
    loss: Mapped[float | None] = mapped_column(Float)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    accrued_cost_usd: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
