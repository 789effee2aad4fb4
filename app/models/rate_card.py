"""The organisation's rate card: one row per negotiated rate (app/catalog/prices/ratecard.py)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class RateCardLine(Base):
    """A discount off list or a contracted $/GPU-hour for one provider's GPU or instance."""

    __tablename__ = "rate_card_lines"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64))
    gpu: Mapped[str | None] = mapped_column(String(64))
    instance: Mapped[str | None] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(64))
    pricing: Mapped[str | None] = mapped_column(String(16))
    discount_pct: Mapped[float | None] = mapped_column(Float)
    contracted_usd_per_gpu_hour: Mapped[float | None] = mapped_column(Float)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    commitment_id: Mapped[str | None] = mapped_column(String(200))
    uploaded_by: Mapped[str] = mapped_column(String(100))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
