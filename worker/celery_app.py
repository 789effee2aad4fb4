"""The Celery app: `celery -A worker.celery_app worker`.

A worker detects its device once at start (NVML, never CUDA: the pool forks after this), consumes
the queue for that GPU kind and records a heartbeat row so the API can count live workers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, worker_ready, worker_shutdown

from app.config import get_settings
from app.queue import celery_config, queue_for

log = logging.getLogger(__name__)


def device_kind() -> tuple[str, str, int]:
    """(catalog GPU id, device name, count) of this machine; TUNECOST_WORKER_GPU overrides."""
    from worker.metering import detect_device

    device = detect_device()
    kind = get_settings().worker_gpu or device.kind
    return kind, device.name, device.count


def _make_app() -> Celery:
    settings = get_settings()
    app = Celery("tunecost", include=["worker.tasks"])
    app.conf.update(celery_config(settings))
    return app


celery_app = _make_app()
app = celery_app  # `celery -A worker.celery_app` finds either name


class _Heartbeat:
    """Upserts this worker's row every interval from a daemon thread in the main process."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.hostname = ""

    def start(self, hostname: str) -> None:
        from worker import registry

        kind, name, count = device_kind()
        self.hostname = hostname
        interval = get_settings().heartbeat_interval_s

        def beat() -> None:
            while True:
                try:
                    registry.beat(
                        hostname=hostname,
                        gpu=kind,
                        queue=queue_for(kind),
                        device_name=name,
                        device_count=count,
                        pid=os.getpid(),
                    )
                except Exception:  # the database may be briefly down; keep beating
                    log.warning("worker heartbeat failed", exc_info=True)
                if self.stop.wait(interval):
                    return

        self.thread = threading.Thread(target=beat, name="tunecost-heartbeat", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        from worker import registry

        self.stop.set()
        if self.hostname:
            try:
                registry.remove(hostname=self.hostname)
            except Exception:
                log.warning("could not remove worker row", exc_info=True)


_heartbeat = _Heartbeat()


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    _heartbeat.start(hostname)


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    _heartbeat.shutdown()


@celeryd_init.connect
def _consume_own_kind(conf: Any = None, **_: Any) -> None:
    """Without -Q, a worker consumes the queue of its own device kind (e.g. `gpu.A100-80GB`)."""
    if conf is not None:
        conf.task_default_queue = queue_for(device_kind()[0])
