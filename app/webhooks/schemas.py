"""Request and response bodies of /v1/webhooks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.kit.instants import UtcInstant
from app.models import DeliveryStatus
from app.webhooks.events import EventType
from app.webhooks.targets import MAX_URL_CHARS

SUBSCRIBABLE = tuple(e.value for e in EventType if e != EventType.PING)


def _events(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in SUBSCRIBABLE]
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}; use any of {', '.join(SUBSCRIBABLE)}")
    if not values:
        raise ValueError("subscribe to at least one event")
    return list(dict.fromkeys(values))


class SubscriptionIn(BaseModel):
    """Where to POST which events."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_CHARS, description="an https:// URL on a public address")
    events: list[str] = Field(description=f"any of: {', '.join(SUBSCRIBABLE)}")
    description: str | None = Field(None, max_length=300)
    team: str | None = Field(
        None, min_length=1, max_length=200, description="admin keys: whose events these are"
    )

    @field_validator("events")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        return _events(values)


class SubscriptionPatch(BaseModel):
    """What a subscription may change."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=MAX_URL_CHARS)
    events: list[str] | None = None
    description: str | None = Field(None, max_length=300)
    active: bool | None = None

    @field_validator("events")
    @classmethod
    def _known(cls, values: list[str] | None) -> list[str] | None:
        return _events(values) if values is not None else None


class SubscriptionOut(BaseModel):
    """A subscription; its secret is only ever in the answer that made it (or rotated it)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    team: str | None
    url: str
    events: list[str]
    description: str | None
    active: bool
    secret_hint: str = Field(description="the secret's first characters, to tell it apart")
    created_at: UtcInstant
    updated_at: UtcInstant


class SubscriptionCreated(SubscriptionOut):
    """A subscription just made, with the signing secret: store it now, it is not shown again."""

    secret: str = Field(description="HMAC-SHA256 key of the Tunecost-Signature header")


class SubscriptionList(BaseModel):
    """The tenant's subscriptions, newest first."""

    items: list[SubscriptionOut]


class AttemptOut(BaseModel):
    """One HTTP request of a delivery."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    started_at: UtcInstant
    duration_ms: float
    status_code: int | None = Field(description="the receiver's HTTP status; null: no answer")
    error: str | None
    response_excerpt: str | None = Field(description="the first 500 bytes of the answer")


class DeliveryOut(BaseModel):
    """One event sent to the subscription: its state, attempts and (in detail) its body."""

    id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: UtcInstant | None = Field(description="when the next attempt is due")
    last_status_code: int | None
    last_error: str | None
    redelivery_of: str | None
    created_at: UtcInstant
    delivered_at: UtcInstant | None
    attempt_log: list[AttemptOut]
    payload: dict[str, Any] | None = Field(
        None, description="the event as sent (in GET .../deliveries/{id} only)"
    )


class DeliveryPage(BaseModel):
    """A subscription's deliveries, newest first, one page."""

    items: list[DeliveryOut]
    next_cursor: str | None
