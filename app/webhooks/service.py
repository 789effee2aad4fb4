"""Webhook subscriptions of a tenant, their delivery log, redelivery and a test ping.

A subscription belongs to the key's team (an admin names it), or for a key without a team to
that key alone, like every other row (app/auth/tenancy.py). Events are queued by `events.emit`
when they happen; the workers deliver them (app/webhooks/delivery.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import quotas
from app.auth.service import Principal
from app.auth.tenancy import can_see, visible
from app.config import get_settings
from app.errors import InvalidInput, NotFound, ServiceUnavailable
from app.kit.pagination import keyset_page
from app.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.models.base import new_id, utcnow
from app.webhooks import events, secrets, targets
from app.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    SubscriptionIn,
    SubscriptionPatch,
)


def _team(principal: Principal, team: str | None) -> str | None:
    if team is None or team == principal.team:
        return principal.team
    if not principal.is_admin:
        raise InvalidInput(
            f"team is {team!r} but this key belongs to {principal.team!r}", field="team"
        )
    return team


def _check_url(url: str) -> None:
    try:
        targets.check(url, get_settings())
    except targets.TargetRefused as exc:
        raise InvalidInput(f"url: {exc}", field="url") from None


def _seal(secret: str) -> str:
    try:
        return secrets.seal(secret)
    except secrets.SecretsUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from None


def create(
    session: Session, *, sub_in: SubscriptionIn, principal: Principal
) -> tuple[WebhookSubscription, str]:
    """A new subscription and its signing secret (returned this once)."""
    _check_url(sub_in.url)
    team = _team(principal, sub_in.team)
    quotas.check_webhook(session, quotas.Tenant(team=team, key_id=principal.key_id))
    secret = secrets.new_secret()
    sub = WebhookSubscription(
        id=new_id("whk"),
        team=team,
        created_by_key_id=principal.key_id,
        url=sub_in.url,
        events=sub_in.events,
        description=sub_in.description,
        secret_sealed=_seal(secret),
        secret_hint=secrets.hint(secret),
        active=True,
    )
    session.add(sub)
    session.flush()
    return sub, secret


def list_(session: Session, *, principal: Principal) -> Sequence[WebhookSubscription]:
    """The tenant's subscriptions, newest first."""
    stmt = select(WebhookSubscription).where(
        visible(
            principal,
            team=WebhookSubscription.team,
            created_by_key_id=WebhookSubscription.created_by_key_id,
        )
    )
    return session.scalars(stmt.order_by(WebhookSubscription.created_at.desc())).all()


def get(session: Session, *, subscription_id: str, principal: Principal) -> WebhookSubscription:
    """One subscription of the tenant; 404 otherwise."""
    sub = session.get(WebhookSubscription, subscription_id)
    if sub is None or not can_see(
        principal, team=sub.team, created_by_key_id=sub.created_by_key_id
    ):
        raise NotFound(f"no webhook subscription with id {subscription_id!r}")
    return sub


def update(
    session: Session, *, subscription_id: str, patch: SubscriptionPatch, principal: Principal
) -> WebhookSubscription:
    """Change a subscription's URL, events, description or whether it is active."""
    sub = get(session, subscription_id=subscription_id, principal=principal)
    changes = patch.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None and name != "description":
            raise InvalidInput(f"{name} may be changed, not removed", field=name)
    if "url" in changes:
        _check_url(changes["url"])
    for name, value in changes.items():
        setattr(sub, name, value)
    session.flush()
    return sub


def rotate(
    session: Session, *, subscription_id: str, principal: Principal
) -> tuple[WebhookSubscription, str]:
    """Replace the signing secret; the new one is returned this once."""
    sub = get(session, subscription_id=subscription_id, principal=principal)
    secret = secrets.new_secret()
    sub.secret_sealed = _seal(secret)
    sub.secret_hint = secrets.hint(secret)
    sub.updated_at = utcnow()
    session.flush()
    return sub, secret


def delete(session: Session, *, subscription_id: str, principal: Principal) -> WebhookSubscription:
    """Remove a subscription and its delivery log."""
    sub = get(session, subscription_id=subscription_id, principal=principal)
    session.delete(sub)
    session.flush()
    return sub


def _delivery(
    session: Session, *, subscription_id: str, delivery_id: str, principal: Principal
) -> WebhookDelivery:
    get(session, subscription_id=subscription_id, principal=principal)
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.subscription_id != subscription_id:
        raise NotFound(f"no delivery with id {delivery_id!r} for this subscription")
    return delivery


def deliveries(
    session: Session,
    *,
    subscription_id: str,
    principal: Principal,
    limit: int,
    cursor: str | None,
) -> tuple[list[DeliveryOut], str | None]:
    """The subscription's delivery log, newest first, with each delivery's attempts."""
    get(session, subscription_id=subscription_id, principal=principal)
    stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    rows, next_cursor = keyset_page(
        session,
        stmt,
        created_at=WebhookDelivery.created_at,
        id_column=WebhookDelivery.id,
        limit=limit,
        cursor=cursor,
    )
    return outs(session, rows), next_cursor


def delivery(
    session: Session, *, subscription_id: str, delivery_id: str, principal: Principal
) -> DeliveryOut:
    """One delivery with its attempts and the body it sends."""
    row = _delivery(
        session, subscription_id=subscription_id, delivery_id=delivery_id, principal=principal
    )
    out = outs(session, [row])[0]
    out.payload = json.loads(row.body)
    return out


def redeliver(
    session: Session, *, subscription_id: str, delivery_id: str, principal: Principal
) -> WebhookDelivery:
    """Send a delivery's event again, as a new delivery with the same body (and event id)."""
    original = _delivery(
        session, subscription_id=subscription_id, delivery_id=delivery_id, principal=principal
    )
    again = events.add_delivery(
        session,
        subscription_id=subscription_id,
        event_id=original.event_id,
        type_=original.event_type,
        text=original.body,
    )
    again.redelivery_of = original.id
    session.flush()
    return again


def ping(session: Session, *, subscription_id: str, principal: Principal) -> WebhookDelivery:
    """Queue a `webhook.ping` event to this subscription alone, to check the receiver."""
    sub = get(session, subscription_id=subscription_id, principal=principal)
    event_id = new_id("evt")
    text = events.body(
        event_id=event_id,
        type_=events.EventType.PING,
        team=sub.team,
        data={"subscription_id": sub.id, "url": sub.url},
    )
    row = events.add_delivery(
        session, subscription_id=sub.id, event_id=event_id, type_=events.EventType.PING, text=text
    )
    session.flush()
    return row


def outs(session: Session, rows: Sequence[WebhookDelivery]) -> list[DeliveryOut]:
    """API views of deliveries, their attempts read in one query."""
    ids = [r.id for r in rows]
    attempts: dict[str, list[AttemptOut]] = {i: [] for i in ids}
    if ids:
        stmt = (
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(ids))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
        )
        for attempt in session.scalars(stmt):
            attempts[attempt.delivery_id].append(AttemptOut.model_validate(attempt))
    return [
        DeliveryOut(
            id=r.id,
            event_id=r.event_id,
            event_type=r.event_type,
            status=r.status,
            attempts=r.attempts,
            next_attempt_at=r.next_attempt_at,
            last_status_code=r.last_status_code,
            last_error=r.last_error,
            redelivery_of=r.redelivery_of,
            created_at=r.created_at,
            delivered_at=r.delivered_at,
            attempt_log=attempts[r.id],
        )
        for r in rows
    ]
