"""A thread in every worker's main process that recovers jobs whose worker died.

Every `SWEEP_EVERY_HEARTBEATS` heartbeat intervals it re-queues (once) or fails the jobs whose
heartbeat is older than `heartbeat_stale_s` (see app/jobs/recovery.py), commits, and then sends
the re-queued ones to their queues. Any live worker sweeps for every GPU kind; the row locks make
concurrent sweeps safe. The API also sweeps a single job when it is read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from app.config import get_settings
from app.db import session_scope
from app.jobs.recovery import resend_queued, sweep_stale
from worker.celery_app import serves_devices

log = logging.getLogger(__name__)

# Sweeping is one indexed query; every other heartbeat keeps detection within
# heartbeat_stale_s + 2 x heartbeat_interval_s of a worker's death.
SWEEP_EVERY_HEARTBEATS = 2


def sweep_once() -> list[str]:
    """One sweep: recover stale jobs and re-send them after the commit; the re-queued job ids."""
    settings = get_settings()
    with session_scope() as session:
        resend = sweep_stale(session, stale_s=settings.heartbeat_stale_s)
        again = resend_queued(
            session, older_than_s=settings.queued_resend_s, stale_s=settings.heartbeat_stale_s
        )
    # The scope's commit sent their messages (app/kit/outbox.py).
    for job_id in resend:
        log.warning("job %s lost its worker; re-queued", job_id)
    for job_id in again:
        log.warning("job %s still queued; its message was sent again", job_id)
    return resend + again


class Sweeper:
    """Runs `sweep_once` periodically from a daemon thread until stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self.thread is not None:
            return
        period = get_settings().heartbeat_interval_s * SWEEP_EVERY_HEARTBEATS

        def loop() -> None:
            while not self.stop.wait(period):
                try:
                    sweep_once()
                except Exception:  # the database or broker may be briefly down; try again
                    log.warning("stale-job sweep failed", exc_info=True)

        self.thread = threading.Thread(target=loop, name="tunecost-sweeper", daemon=True)
        self.thread.start()


_sweeper = Sweeper()


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    if serves_devices():
        _sweeper.start()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    _sweeper.stop.set()
