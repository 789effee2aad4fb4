"""Webhook subscriptions, the deliveries of events to them, and each delivery's attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdStr, JSONType, TimestampMixin


class DeliveryStatus(StrEnum):
    """A delivery is pending (first try or a retry due), then succeeded or failed for good."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookSubscription(TimestampMixin, Base):
    """Where a tenant wants its events POSTed, which events, and the secret that signs them."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    team: Mapped[str | None] = mapped_column(String(200), index=True)
    created_by_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSONType)
    description: Mapped[str | None] = mapped_column(String(300))
    # The signing secret, encrypted (app/webhooks/secrets.py); shown to the client once.
    secret_sealed: Mapped[str] = mapped_column(Text)
    secret_hint: Mapped[str] = mapped_column(String(16))  # its first characters, to tell apart
    active: Mapped[bool] = mapped_column(default=True)


class WebhookDelivery(Base):
    """One event sent (or to be sent) to one subscription; `body` is the exact bytes signed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_subscription_id_created_at", "subscription_id", "created_at"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(IdStr, index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due; while an attempt is under way, when its claim lapses.
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    redelivery_of: Mapped[str | None] = mapped_column(IdStr)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One HTTP request of a delivery: when, how long, and what the receiver answered."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
