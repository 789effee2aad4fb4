"""Provider price-list imports and the per-GPU rows each one brought (a catalog version each)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class PriceImport(Base):
    """One successful import of one provider's price list; the newest per provider applies."""

    __tablename__ = "price_imports"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(500))
    fetched_at: Mapped[datetime]
    rows: Mapped[int] = mapped_column(Integer)
    catalog_version_id: Mapped[int] = mapped_column(ForeignKey("catalog_versions.id"))
    imported_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportedPrice(Base):
    """A per-GPU price row of an import (same columns as app/catalog/prices.csv)."""

    __tablename__ = "imported_prices"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    import_id: Mapped[int] = mapped_column(
        ForeignKey("price_imports.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(64))
    gpu: Mapped[str] = mapped_column(String(64))
    pricing: Mapped[str] = mapped_column(String(16))
    usd_per_gpu_hour: Mapped[float] = mapped_column(Float)
    instance: Mapped[str] = mapped_column(String(200))
    gpus_per_instance: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(500))
