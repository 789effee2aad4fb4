"""Celery tasks. Each takes ids, reloads its rows and is safe to run twice (acks are late)."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from app.catalog.prices.refresh import refresh_all
from app.config import get_settings
from app.kit.queue import (
    DELIVER_FOCUS_TASK,
    DELIVER_WEBHOOK_TASK,
    FILL_FOCUS_LINES_TASK,
    REFRESH_PRICES_TASK,
    RUN_JOB_TASK,
    SWEEP_WEBHOOKS_TASK,
)
from app.reports import delivery as focus_delivery
from app.reports import focus_pg
from app.webhooks import delivery
from worker import devices, gang, job_rows, sweeper
from worker.celery_app import celery_app
from worker.jobs import claim_and_run

log = logging.getLogger(__name__)
# A job waiting for its worker's devices asks the database at most this often whether it was
# cancelled meanwhile (the wait itself looks at the device locks every WAIT_POLL_S).
DEVICE_WAIT_CHECK_S = 5.0

__all__ = [
    "deliver_focus",
    "deliver_webhook",
    "echo",
    "fill_focus_lines",
    "refresh_prices",
    "run_job",
    "sweep_webhooks",
    "sweeper",
]


@celery_app.task(name="tunecost.echo", ignore_result=False)
def echo(payload: Any) -> dict[str, Any]:
    """Return the payload and who ran it: proves the broker → worker path end to end."""
    return {"payload": payload, "hostname": socket.gethostname()}


@celery_app.task(name=REFRESH_PRICES_TASK)
def refresh_prices() -> dict[str, str]:
    """Fetch and import every provider's price list (beat, when TUNECOST_PRICE_REFRESH_EVERY_H)."""
    return refresh_all()


@celery_app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt of a webhook delivery, if due; a failure schedules the next (with backoff)."""
    return delivery.deliver(delivery_id)


@celery_app.task(name=SWEEP_WEBHOOKS_TASK)
def sweep_webhooks() -> int:
    """Send again the deliveries whose message was lost (beat, every webhook_sweep_every_s)."""
    return delivery.sweep()


@celery_app.task(name=DELIVER_FOCUS_TASK)
def deliver_focus() -> dict[str, str]:
    """Write each changed billing period's FOCUS files (beat, every focus_delivery_every_h)."""
    return focus_delivery.deliver_all()


@celery_app.task(name=FILL_FOCUS_LINES_TASK)
def fill_focus_lines() -> int:
    """Write the FOCUS lines finished jobs lack (beat, every focus_lines_every_s)."""
    return focus_pg.fill(get_settings())


@celery_app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    """Run job `job_id` (or, for a job across nodes, one of its nodes) to its end; returns a
    one-line summary (for the worker's log)."""
    hostname = run_job.request.hostname or "worker"
    settings = get_settings()
    with devices.running_job(nodename=hostname, settings=settings, job_id=job_id) as ours:
        if not ours:
            # One node of a job per worker: another node's message goes to another worker.
            if gang.pass_on(job_id):
                return "passed on: this worker already holds a node of the job"
            log.info("run_job %s skipped: another process of this worker runs it", job_id)
            return "skipped: another process of this worker runs it"
        allocator = devices.Allocator(devices.worker_devices(nodename=hostname, settings=settings))
        taken = _take_devices(job_id, hostname=hostname, allocator=allocator)
        if isinstance(taken, str):
            return taken
        lease, need = taken
        with lease:
            if need.nodes > 1:
                return gang.run_node(job_id, hostname=hostname, lease=lease)
            return claim_and_run(job_id, hostname=hostname, lease=lease)


def _take_devices(
    job_id: str, *, hostname: str, allocator: devices.Allocator
) -> tuple[devices.DeviceLease, job_rows.Need] | str:
    """The devices of the job's node once they are free (the job stays queued meanwhile), and
    what the job needs; or why not."""
    need = job_rows.devices_needed(job_id)
    if need is None:
        return f"skipped: job {job_id} is gone or has ended"
    needed = need.devices
    if needed > allocator.total:
        # Only a worker started with a hand-written -Q list gets here: the queue of each job
        # size names it, and a worker consumes only the sizes it has devices for.
        reason = (
            f"the job needs {needed} devices but worker {hostname} has {allocator.total}; it "
            f"was sent to a worker that consumes a queue of a size it cannot hold"
        )
        job_rows.fail_unclaimed(job_id, reason=reason)
        return f"failed: {reason}"
    lease = allocator.try_acquire(needed)
    if lease is not None:
        return lease, need
    job_rows.note_waiting(
        job_id,
        detail=f"waiting on {hostname} for {needed} of its {allocator.total} devices to be free",
    )
    next_check = time.monotonic() + DEVICE_WAIT_CHECK_S

    def ended() -> bool:
        nonlocal next_check
        if time.monotonic() < next_check:
            return False
        next_check = time.monotonic() + DEVICE_WAIT_CHECK_S
        return job_rows.devices_needed(job_id) is None  # cancelled or deleted while waiting

    lease = allocator.acquire(needed, should_stop=ended)
    if lease is None:
        return f"skipped: job {job_id} ended while waiting for devices"
    return lease, need
