"""The health probe's answer."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.kit.instants import UtcInstant


class DatabaseHealth(BaseModel):
    """The database answered, at this Alembic revision."""

    ok: bool
    revision: str | None


class BrokerHealth(BaseModel):
    """Whether the broker accepted a connection within the ping timeout."""

    ok: bool
    transport: str | None = Field(None, description="redis, sqla+sqlite...")
    error: str | None = Field(None, description="the transport error's type when not ok")


class DevicesHealth(BaseModel):
    """The devices of the live workers of one GPU kind."""

    total: int
    free: int | None = Field(description="held by no job at the last heartbeats")
    largest_worker: int = Field(
        description="the most devices one worker has: the largest job of this kind it can run"
    )


class WorkerNodeHealth(BaseModel):
    """One live worker and its devices, as its last heartbeat reported them."""

    name: str = Field(description="the Celery node name, as jobs show it in `worker`")
    gpu: str
    devices_total: int = Field(
        description="devices it runs jobs on (NVML, or set by TUNECOST_WORKER_GPU_COUNT)"
    )
    devices_free: int | None = Field(description="held by no job; null from an older worker")
    last_seen_at: UtcInstant


class WorkersHealth(BaseModel):
    """Workers with a fresh heartbeat."""

    live: int
    by_gpu: dict[str, int] = Field(description="live workers per GPU kind (queue gpu.<kind>)")
    devices: dict[str, DevicesHealth] = Field(description="their devices per GPU kind")
    nodes: list[WorkerNodeHealth]


class PricesHealth(BaseModel):
    """Whether every effective price is younger than TUNECOST_PRICE_MAX_AGE_DAYS."""

    ok: bool
    catalog_version: int
    max_age_days: int
    stale: int = Field(description="prices older than max_age_days")
    total: int
    oldest_as_of: str | None = Field(description="YYYY-MM-DD of the oldest price")
    stale_providers: list[str]


class HealthOut(BaseModel):
    """Ok or degraded; with a key also the database, broker, live workers, price freshness and
    the schema revision (without one, nothing about hosts or devices)."""

    status: str = Field(description="ok, or degraded when prices are stale (still 200)")
    prices: PricesHealth | None = Field(None, description="with a key")
    database: DatabaseHealth | None = Field(None, description="with a key")
    broker: BrokerHealth | None = Field(None, description="with a key")
    workers: WorkersHealth | None = Field(None, description="with a key")
    schema_revision: str | None = Field(None, description="with a key")
