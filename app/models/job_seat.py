"""Seats of a job across nodes: one row per node of a multi-node job while its gang forms and runs.

A worker that takes one of the job's messages joins a free seat (app/jobs/gang.py); seat 0 is
the host: it claims the job once every seat is taken and publishes the rendezvous endpoint its
ranks and the other nodes' ranks meet at. Each node beats its own seat, so a node whose worker
died is seen by the others (a stale heartbeat). Seats go when the gang ends (lifecycle).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class SeatState(StrEnum):
    """Where one node of a gang is: waiting for the others, training, or ended."""

    JOINED = "joined"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobSeat(Base):
    """One node's place in a multi-node job: which worker holds it, since when, how it ended."""

    __tablename__ = "job_seats"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    node_index: Mapped[int] = mapped_column(primary_key=True)
    worker: Mapped[str] = mapped_column(String(300))
    state: Mapped[SeatState] = mapped_column(String(16))
    # seat 0 only, once the gang is complete: host:port of torch's rendezvous store
    endpoint: Mapped[str | None] = mapped_column(String(300))
    attempt: Mapped[int | None]  # the job's attempt this gang runs, once the host claimed it
    joined_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(Text)
