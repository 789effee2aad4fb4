"""The health probe's answer."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DatabaseHealth(BaseModel):
    """The database answered, at this Alembic revision."""

    ok: bool
    revision: str | None


class BrokerHealth(BaseModel):
    """Whether the broker accepted a connection within the ping timeout."""

    ok: bool
    transport: str | None = Field(None, description="redis, sqla+sqlite...")
    error: str | None = Field(None, description="the transport error's type when not ok")


class WorkersHealth(BaseModel):
    """Workers with a fresh heartbeat."""

    live: int
    by_gpu: dict[str, int] = Field(description="live workers per GPU kind (queue gpu.<kind>)")


class HealthOut(BaseModel):
    """Database, broker, live workers and the schema revision."""

    status: str
    database: DatabaseHealth
    broker: BrokerHealth
    workers: WorkersHealth
    schema_revision: str | None
