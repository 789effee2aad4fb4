"""Live workers: each worker process upserts its row every few seconds (its heartbeat)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class WorkerNode(Base):
    """A Celery worker, the GPU kind it serves and when it last said it was alive."""

    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(300), primary_key=True)
    gpu: Mapped[str] = mapped_column(String(64), index=True)
    queue: Mapped[str] = mapped_column(String(100))
    device_name: Mapped[str] = mapped_column(String(300))
    device_count: Mapped[int]
    # Devices no job holds at the last heartbeat; None from a worker that predates it.
    devices_free: Mapped[int | None]
    pid: Mapped[int]
    # The device's speed as this worker measured it at start (worker/speed.py); None until then.
    matmul_tflops: Mapped[float | None] = mapped_column(Float)
    memory_gbps: Mapped[float | None] = mapped_column(Float)
    host_s_per_layer: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
