"""Submit-time checks that some worker could ever run a job of this many devices.

A plan is runnable when its devices fit what one job may have (TUNECOST_GPUS_PER_NODE x
TUNECOST_MAX_NODES_PER_JOB) on a GPU kind the fleet serves: a job for a plan that is not is
refused, naming the best runnable plan of the same estimate. A worker takes jobs of up to as
many devices as it has (queues `gpu.<kind>.x<n>`). A job larger than every live worker of its
GPU kind would wait forever, so it is refused at submit. With no live worker of the kind at
all, nothing is known about the live fleet: the job is accepted and waits in its queue, as
every job does while its workers are down.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog.loader import load_catalog
from app.errors import InvalidInput
from app.estimates.service import current_fleet
from app.estimator.results import EstimateResult
from app.estimator.spec import Method
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


def check(session: Session, *, gpu: str, num_gpus: int, stale_s: float, nodes: int = 1) -> None:
    """Refuse a job whose node needs more devices (`num_gpus`, per node) than every live worker
    of its GPU kind has."""
    largest = largest_live_worker(session, gpu=gpu, stale_s=stale_s)
    if largest is None or num_gpus <= largest:
        return
    where = "on one worker" if nodes == 1 else f"on each of {nodes} workers (one per node)"
    raise InvalidInput(
        f"the job needs {num_gpus} x {gpu} {where}, but the largest live {gpu} worker has "
        f"{largest} device(s); estimate with hardware.num_gpus of at most {largest * nodes}, or "
        f"start {gpu} workers with at least {num_gpus} devices (TUNECOST_WORKER_GPU_COUNT)",
        field="hardware.num_gpus",
        workers={"gpu": gpu, "largest_device_count": largest},
    )


def check_runnable(*, result: EstimateResult, method: Method, gpu: str, num_gpus: int) -> None:
    """Refuse a plan no worker of the fleet can run, naming the estimate's best runnable plan."""
    fleet = current_fleet(load_catalog().gpus)
    why = fleet.why_not(gpu, num_gpus)
    if why is None:
        return
    runnable = [
        p
        for p in result.plans.get(method, [])
        if p.fits and p.cost_usd is not None and fleet.why_not(p.gpu, p.num_gpus) is None
    ]
    alternative: dict[str, Any] | None = None
    fix = "estimate again with hardware.num_gpus within what one worker node has"
    if runnable:
        best = runnable[0]
        where = f" at {best.provider}" if best.provider else ""
        alternative = {
            "gpu": best.gpu,
            "num_gpus": best.num_gpus,
            "provider": best.provider,
            "cost_usd": best.cost_usd,
        }
        fix = (
            f"the runnable alternative is {best.num_gpus} x {best.gpu}{where} for "
            f"${best.cost_usd:,.2f}: estimate with hardware.gpu={best.gpu} and "
            f"hardware.num_gpus={best.num_gpus}"
        )
    raise InvalidInput(
        f"the {method} plan ({num_gpus} x {gpu}) cannot run: {why}; {fix}",
        field="hardware",
        alternative=alternative,
    )
