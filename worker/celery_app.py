"""The Celery app: `celery -A worker.celery_app worker`.

A worker detects its device kind and count once at start (NVML, never CUDA: the pool forks after
this). Its pool has one process per device (worker/devices.py keeps the jobs' device sets
disjoint); it consumes the queue of its GPU kind for every job size it can hold (`gpu.<kind>`,
`gpu.<kind>.x2`, ... up to its device count) and records a heartbeat row, with its devices total
and free, so the API can count live workers and their devices.
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
from app.estimator.speed import DeviceSpeed
from app.kit.queue import QUEUE_PREFIX, celery_config, queue_for, queues_up_to
from app.reports import rollups
from app.studies import analysis as study_analysis
from worker import devices

log = logging.getLogger(__name__)
# Every job this process ends keeps the report rollups in the same transaction.
rollups.track()


def device_kind() -> tuple[str, str, int]:
    """(catalog GPU id, device name, device count) of this worker.

    TUNECOST_WORKER_GPU overrides the kind, TUNECOST_WORKER_GPU_COUNT the count.
    """
    from worker.training.metering import detect_device

    settings = get_settings()
    device = detect_device()
    kind = settings.worker_gpu or device.kind
    return kind, device.name, devices.device_count(settings)


def _make_app() -> Celery:
    settings = get_settings()
    app = Celery("tunecost", include=["worker.tasks"])
    app.conf.update(celery_config(settings))
    # One pool process per device, so the worker can run a job on each; `-c` still overrides
    # (read by Celery's command line before any worker signal fires, hence set here).
    app.conf.worker_concurrency = devices.device_count(settings)
    return app


celery_app = _make_app()
# A study moves on when one of its pilots ends, on whichever worker ends it (job-ended hook).
study_analysis.install()
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
        settings = get_settings()
        interval = settings.heartbeat_interval_s
        allocator = devices.Allocator(devices.worker_devices(nodename=hostname, settings=settings))

        def beat() -> None:
            measured: DeviceSpeed | None = None
            tried = False
            while True:
                try:
                    registry.beat(
                        hostname=hostname,
                        gpu=kind,
                        queue=queue_for(kind),
                        device_name=name,
                        device_count=count,
                        devices_free=allocator.free(),
                        pid=os.getpid(),
                        speed=measured,
                    )
                except Exception:  # the database may be briefly down; keep beating
                    log.warning("worker heartbeat failed", exc_info=True)
                if not tried:  # after the first beat, so the worker is live meanwhile
                    tried = True
                    measured = _measure_speed(kind, name, count)
                    continue
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


def _measure_speed(kind: str, name: str, count: int) -> DeviceSpeed | None:
    """This machine's measured speed of the worker's device (worker/speed.py), cached."""
    from worker import speed
    from worker.training.cpu_threads import cpu_threads
    from worker.training.metering import CPU_KIND, visible_gpu_uuids

    settings = get_settings()
    on_cpu = kind == CPU_KIND
    if not on_cpu and not visible_gpu_uuids():
        return None  # a GPU kind named by settings on a machine without one: nothing to measure
    threads = max(1, cpu_threads(settings.worker_cpu_threads) // count) if on_cpu else 1
    found = speed.device_speed(
        kind=kind, name=name, device="cpu" if on_cpu else "cuda", threads=threads
    )
    if found is None:
        log.warning("could not measure the speed of %s (%s)", kind, name)
    return found


_heartbeat = _Heartbeat()
# False in a worker started with -Q naming no `gpu.` queue (`-Q tunecost.control`): it runs the
# short control tasks (webhook deliveries, the FOCUS delivery) and no job, so it neither
# announces devices (its heartbeat row would count as capacity) nor sweeps jobs.
_serves_devices = True


def serves_devices() -> bool:
    """Whether this worker process runs jobs on devices (decided at start from -Q)."""
    return _serves_devices


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    if not serves_devices():
        log.info("control worker: no device heartbeat, no job sweep")
        return
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    _heartbeat.start(hostname)


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    _heartbeat.shutdown()


@celeryd_init.connect
def _consume_own_kind(
    instance: Any = None, conf: Any = None, options: dict[str, Any] | None = None, **_: Any
) -> None:
    """Without -Q, a worker consumes its own kind's queue for each job size it can hold.

    e.g. `gpu.A100-80GB` (1-device jobs) and `gpu.A100-80GB.x2` on a 2-GPU machine. With -Q,
    it consumes what it is given, and runs jobs only if that names a `gpu.` queue.
    """
    global _serves_devices
    given = (options or {}).get("queues")
    if given:
        names = given.split(",") if isinstance(given, str) else [str(q) for q in given]
        _serves_devices = any(n.strip().startswith(QUEUE_PREFIX) for n in names)
        return
    if conf is None:
        return
    kind, _name, count = device_kind()
    conf.task_default_queue = queue_for(kind)
    if instance is not None:
        queues = instance.app.amqp.queues
        for name in queues_up_to(kind, count):
            # Declared as the sending side declares a queue it names (exchange = queue name).
            queues.select_add(queues.new_missing(name))
