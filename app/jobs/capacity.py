"""Submit-time check that some worker could ever hold a job of this many devices.

A worker takes jobs of up to as many devices as it has (queues `gpu.<kind>.x<n>`). A job larger
than every live worker of its GPU kind would wait forever, so it is refused at submit. With no
live worker of the kind at all, nothing is known about the fleet: the job is accepted and waits
in its queue, as every job does while its workers are down.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.models import WorkerNode
from app.models.base import utcnow


def largest_live_worker(session: Session, *, gpu: str, stale_s: float) -> int | None:
    """The most devices any live worker of this GPU kind has; None when none is live."""
    cutoff = utcnow() - timedelta(seconds=stale_s)
    return session.scalar(
        select(func.max(WorkerNode.device_count)).where(
            WorkerNode.gpu == gpu, WorkerNode.last_seen_at >= cutoff
        )
    )


def check(session: Session, *, gpu: str, num_gpus: int, stale_s: float) -> None:
    """Refuse a job needing more devices than every live worker of its GPU kind has."""
    largest = largest_live_worker(session, gpu=gpu, stale_s=stale_s)
    if largest is None or num_gpus <= largest:
        return
    raise InvalidInput(
        f"the job needs {num_gpus} x {gpu} on one worker, but the largest live {gpu} worker has "
        f"{largest} device(s); estimate with hardware.num_gpus of at most {largest}, or start a "
        f"{gpu} worker with at least {num_gpus} devices (TUNECOST_WORKER_GPU_COUNT)",
        field="hardware.num_gpus",
        workers={"gpu": gpu, "largest_device_count": largest},
    )
