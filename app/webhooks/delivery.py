"""Delivering one webhook: claim the row, POST the signed body, record the attempt, retry later.

The Celery task `deliver_webhook(delivery_id)` (run by a worker serving `tunecost.control`) calls
`deliver`. Each attempt:

1. **claims** the delivery in a short transaction: still pending, due, its subscription active;
   the attempt is counted and `next_attempt_at` moved past the attempt's longest duration, so a
   second message for the same delivery (a redelivered task, the sweep) finds it not due;
2. **posts** with no database connection held: to the address the target's host resolves to
   now, checked again (app/webhooks/targets.py), signed now (app/webhooks/signing.py);
3. **records** the attempt: a 2xx answer ends it `succeeded`; anything else (another status, a
   timeout, a refused connection or target) schedules the next attempt after an exponential
   backoff (base x 2^(n-1), capped, plus up to 10% jitter) by sending the task again with that
   countdown, until `webhook_max_attempts`, when it ends `failed`.

The database row is the truth: the beat's sweep (`sweep`) sends the task again for a delivery
whose due time passed long ago (its message was lost with a broker or a worker).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import session_scope
from app.kit import outbox
from app.kit.instants import as_utc
from app.kit.queue import CONTROL_QUEUE, DELIVER_WEBHOOK_TASK
from app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.models.base import utcnow
from app.webhooks import secrets, signing, targets

USER_AGENT = "tunecost-webhooks/1"
JITTER = 0.1  # up to +10% on each wait, so retries of many deliveries spread out
EXCERPT_BYTES = 500  # of the receiver's answer, kept in the delivery log
CLAIM_SLACK_S = 1.0  # a countdown may fire a little early; such a message still claims
SWEEP_GRACE_S = 60.0  # overdue this long: its message is taken for lost and sent again
SWEEP_BATCH = 500


@dataclass(frozen=True)
class Claimed:
    """An attempt this worker makes: what to send where, signed with which secret."""

    delivery_id: str
    attempt: int
    url: str
    secret: str | None  # None: no configured key opens it (`error` says why)
    body: str
    event_type: str
    event_id: str
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one attempt got."""

    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    excerpt: str | None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_s(attempt: int, settings: Settings) -> float:
    """The wait after failed attempt number `attempt` (1-based), before jitter."""
    wait: float = settings.webhook_retry_base_s * 2.0 ** (attempt - 1)
    return min(wait, settings.webhook_retry_max_s)


def _lock(session: Session, delivery_id: str) -> WebhookDelivery | None:
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(skip_locked=True)
    )
    return session.scalar(stmt)


def claim(delivery_id: str, *, settings: Settings) -> Claimed | None:
    """Take the delivery's next attempt if it is due; None when there is nothing to do now."""
    now = utcnow()
    with session_scope() as session:
        delivery = _lock(session, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return None
        due = delivery.next_attempt_at
        if due is not None and as_utc(due) > now + timedelta(seconds=CLAIM_SLACK_S):
            return None
        sub = session.get(WebhookSubscription, delivery.subscription_id)
        if sub is None or not sub.active:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = "the subscription was disabled before this delivery was sent"
            delivery.next_attempt_at = None
            return None
        delivery.attempts += 1
        # While the attempt is under way no other message may claim it.
        delivery.next_attempt_at = now + timedelta(seconds=settings.webhook_timeout_s * 3)
        try:
            secret, error = secrets.unseal(sub.secret_sealed, settings), None
        except secrets.SecretsUnavailable as exc:
            secret, error = None, f"cannot sign: {exc}"
        return Claimed(
            delivery_id=delivery.id,
            attempt=delivery.attempts,
            url=sub.url,
            secret=secret,
            body=delivery.body,
            event_type=delivery.event_type,
            event_id=delivery.event_id,
            error=error,
        )


def post(claimed: Claimed, *, settings: Settings) -> Outcome:
    """Send one attempt: resolve and check the target, sign, POST; never raises."""
    started = utcnow()
    clock = time.monotonic()
    body = claimed.body.encode()

    def done(code: int | None, error: str | None, excerpt: str | None = None) -> Outcome:
        ms = (time.monotonic() - clock) * 1000.0
        return Outcome(started, ms, code, error, excerpt)

    if claimed.secret is None:
        return done(None, claimed.error)
    try:
        target, addresses = targets.check(claimed.url, settings)
    except targets.TargetRefused as exc:
        return done(None, f"target refused: {exc}")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": target.netloc,
        "Tunecost-Event": claimed.event_type,
        "Tunecost-Event-Id": claimed.event_id,
        "Tunecost-Delivery": claimed.delivery_id,
        "Tunecost-Attempt": str(claimed.attempt),
        signing.SIGNATURE_HEADER: signing.header(claimed.secret, body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        # trust_env off: a proxy from the environment would connect to the name, not the
        # address checked above. The answer is streamed and only its start read: a receiver
        # cannot make the worker hold a large body.
        with (
            httpx.Client(timeout=settings.webhook_timeout_s, trust_env=False) as client,
            client.stream(
                "POST",
                target.url_at(addresses[0]),
                content=body,
                headers=headers,
                extensions=extensions,
            ) as response,
        ):
            start = b""
            for piece in response.iter_bytes():
                start += piece
                if len(start) >= EXCERPT_BYTES:
                    break
    except httpx.HTTPError as exc:
        return done(None, f"{type(exc).__name__}: {exc}"[:EXCERPT_BYTES])
    excerpt = start[:EXCERPT_BYTES].decode("utf-8", "replace") or None
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return done(response.status_code, error, excerpt)


def record(claimed: Claimed, outcome: Outcome, *, settings: Settings) -> float | None:
    """Store the attempt and its consequence; the wait before the next attempt, if any."""
    with session_scope() as session:
        delivery = session.get(WebhookDelivery, claimed.delivery_id, with_for_update=True)
        if delivery is None:
            return None  # its subscription was deleted meanwhile
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                attempt=claimed.attempt,
                started_at=outcome.started_at,
                duration_ms=outcome.duration_ms,
                status_code=outcome.status_code,
                error=outcome.error,
                response_excerpt=outcome.excerpt,
            )
        )
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        if outcome.ok:
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.delivered_at = utcnow()
            delivery.next_attempt_at = None
            return None
        if claimed.attempt >= settings.webhook_max_attempts:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
            return None
        wait = backoff_s(claimed.attempt, settings) * (1.0 + random.uniform(0.0, JITTER))
        delivery.next_attempt_at = utcnow() + timedelta(seconds=wait)
        outbox.send_after_commit(
            session,
            outbox.TaskMessage(DELIVER_WEBHOOK_TASK, (delivery.id,), CONTROL_QUEUE, wait),
        )
        return wait


def deliver(delivery_id: str) -> str:
    """One attempt of a delivery, if one is due; a line for the worker's log."""
    settings = get_settings()
    claimed = claim(delivery_id, settings=settings)
    if claimed is None:
        return f"{delivery_id}: nothing due"
    outcome = post(claimed, settings=settings)
    wait = record(claimed, outcome, settings=settings)
    said = outcome.status_code or outcome.error
    if outcome.ok:
        return f"{delivery_id}: delivered on attempt {claimed.attempt} ({said})"
    if wait is None:
        return f"{delivery_id}: attempt {claimed.attempt} failed ({said}); no retries left"
    return f"{delivery_id}: attempt {claimed.attempt} failed ({said}); next in {wait:.1f} s"


def sweep() -> int:
    """Send the task again for pending deliveries long overdue (their message was lost)."""
    cutoff = utcnow() - timedelta(seconds=SWEEP_GRACE_S)
    with session_scope() as session:
        ids = session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at < cutoff,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(SWEEP_BATCH)
        ).all()
        for delivery_id in ids:
            outbox.send_after_commit(
                session, outbox.TaskMessage(DELIVER_WEBHOOK_TASK, (delivery_id,), CONTROL_QUEUE)
            )
    return len(ids)
