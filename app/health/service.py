"""Health probes: database, broker, live workers and schema revision, each with a short timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.catalog import service as catalog_service
from app.catalog.prices.staleness import stale_rows
from app.config import Settings
from app.kit.instants import iso_z
from app.kit.queue import get_client
from app.models import WorkerNode
from app.models.base import utcnow


def database(session: Session) -> dict[str, Any]:
    """Whether the database answers, and the Alembic revision it is at."""
    session.execute(text("SELECT 1"))
    revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return {"ok": True, "revision": revision}


def broker(settings: Settings) -> dict[str, Any]:
    """Whether the broker accepts a connection within the ping timeout."""
    try:
        with get_client().connection_for_write() as conn:
            timeout = settings.worker_ping_timeout_s
            conn.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]  # celery-types says int; kombu hands it to socket timeouts, which take float
        return {"ok": True, "transport": settings.broker_url.split(":", 1)[0]}
    except Exception as exc:  # any transport error means "not reachable"
        return {"ok": False, "error": type(exc).__name__}


def live_workers(session: Session, settings: Settings) -> dict[str, Any]:
    """Workers whose heartbeat is fresh: how many per GPU kind, and each one's devices.

    Every worker upserts its row in `workers` every heartbeat interval, with its device count
    and how many of its devices no job holds. This works on every broker, including kombu's
    SQLAlchemy transport, which has no broadcast, so `celery inspect ping` answers nobody there
    (checked: `control.ping()` returned [] with a live worker).
    """
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_stale_s)
    rows = session.scalars(
        select(WorkerNode)
        .where(WorkerNode.last_seen_at >= cutoff)
        .order_by(WorkerNode.gpu, WorkerNode.hostname)
    ).all()
    by_gpu: dict[str, int] = {}
    devices: dict[str, dict[str, int | None]] = {}
    nodes = []
    for row in rows:
        by_gpu[row.gpu] = by_gpu.get(row.gpu, 0) + 1
        kind = devices.setdefault(row.gpu, {"total": 0, "free": 0, "largest_worker": 0})
        kind["total"] = (kind["total"] or 0) + row.device_count
        kind["largest_worker"] = max(kind["largest_worker"] or 0, row.device_count)
        # A worker that predates the free count makes the kind's free count unknown.
        free = kind["free"]
        kind["free"] = None if free is None or row.devices_free is None else free + row.devices_free
        nodes.append(
            {
                "name": row.hostname,
                "gpu": row.gpu,
                "devices_total": row.device_count,
                "devices_free": row.devices_free,
                "last_seen_at": iso_z(row.last_seen_at),
            }
        )
    return {"live": len(rows), "by_gpu": by_gpu, "devices": devices, "nodes": nodes}


def prices(session: Session, settings: Settings) -> dict[str, Any]:
    """Whether every effective price is younger than TUNECOST_PRICE_MAX_AGE_DAYS."""
    catalog = catalog_service.effective_catalog(session)
    today = utcnow().date()
    stale = stale_rows(catalog.prices, today=today, max_age_days=settings.price_max_age_days)
    oldest = min((r.as_of for r in catalog.prices), default=None)
    return {
        "ok": not stale,
        "catalog_version": catalog.version,
        "max_age_days": settings.price_max_age_days,
        "stale": len(stale),
        "total": len(catalog.prices),
        "oldest_as_of": oldest.isoformat() if oldest else None,
        "stale_providers": sorted({r.provider for r in stale}),
    }
