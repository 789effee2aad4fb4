"""The `workers` table from the worker's side: heartbeat upserts and removal."""

from __future__ import annotations

from sqlalchemy import delete

from app.db import session_scope
from app.estimator.speed import DeviceSpeed
from app.models import WorkerNode
from app.models.base import utcnow


def beat(
    *,
    hostname: str,
    gpu: str,
    queue: str,
    device_name: str,
    device_count: int,
    devices_free: int,
    pid: int,
    speed: DeviceSpeed | None = None,
) -> None:
    """Insert or refresh this worker's row, with how many of its devices no job holds now and,
    once measured, its device's speed."""
    with session_scope() as session:
        row = session.get(WorkerNode, hostname)
        if row is None:
            row = WorkerNode(hostname=hostname, started_at=utcnow())
            session.add(row)
        row.gpu, row.queue, row.device_name = gpu, queue, device_name
        row.device_count, row.devices_free = device_count, devices_free
        row.pid, row.last_seen_at = pid, utcnow()
        if speed is not None:
            row.matmul_tflops = speed.matmul_tflops
            row.memory_gbps = speed.memory_gbps
            row.host_s_per_layer = speed.host_s_per_layer


def remove(*, hostname: str) -> None:
    """Forget a worker that shut down cleanly."""
    with session_scope() as session:
        session.execute(delete(WorkerNode).where(WorkerNode.hostname == hostname))
