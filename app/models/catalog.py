"""Admin price overrides and the catalog version history they advance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class CatalogVersion(Base):
    """One row per change of the effective catalog; the newest id is the current version."""

    __tablename__ = "catalog_versions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    note: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PriceOverride(Base):
    """A negotiated $/GPU-hour that replaces the catalog's list price."""

    __tablename__ = "price_overrides"
    __table_args__ = (UniqueConstraint("provider", "gpu", "pricing"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64))
    gpu: Mapped[str] = mapped_column(String(64))
    pricing: Mapped[str] = mapped_column(String(16))
    usd_per_gpu_hour: Mapped[float] = mapped_column(Float)
    set_by_key_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
