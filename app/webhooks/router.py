"""Routes of /v1/webhooks: subscriptions, their delivery log, redelivery and a ping.

Reading takes a read key; changing subscriptions, redelivering and pinging take a submit key of
the same tenant. The signing secret is in the answer that creates (or rotates) it, never again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.auth.deps import ReadPrincipal, SubmitPrincipal
from app.db import SessionDep
from app.kit.pagination import CursorQuery, LimitQuery
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryOut,
    DeliveryPage,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionList,
    SubscriptionOut,
    SubscriptionPatch,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

SubscriptionId = Annotated[str, Path(max_length=40, description="the subscription's id")]
DeliveryId = Annotated[str, Path(max_length=40, description="the delivery's id")]


def _created(sub: object, secret: str) -> SubscriptionCreated:
    return SubscriptionCreated.model_validate(
        {**SubscriptionOut.model_validate(sub).model_dump(), "secret": secret}
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SubscriptionCreated)
def create_subscription(
    sub_in: SubscriptionIn, session: SessionDep, principal: SubmitPrincipal, response: Response
) -> SubscriptionCreated:
    """Subscribe an HTTPS URL to events; the answer holds the signing secret, shown once.

    Each event is POSTed as JSON, signed in the `Tunecost-Signature` header
    (`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`), and retried with exponential
    backoff until the receiver answers 2xx. URLs on loopback, private or link-local addresses
    (or names resolving to them) are refused.
    """
    sub, secret = service.create(session, sub_in=sub_in, principal=principal)
    response.headers["Location"] = f"/v1/webhooks/{sub.id}"
    return _created(sub, secret)


@router.get("", response_model=SubscriptionList)
def list_subscriptions(session: SessionDep, principal: ReadPrincipal) -> SubscriptionList:
    """The tenant's webhook subscriptions (never their secrets)."""
    subs = service.list_(session, principal=principal)
    return SubscriptionList(items=[SubscriptionOut.model_validate(s) for s in subs])


@router.get("/{subscription_id}", response_model=SubscriptionOut)
def get_subscription(
    subscription_id: SubscriptionId, session: SessionDep, principal: ReadPrincipal
) -> SubscriptionOut:
    """One webhook subscription."""
    sub = service.get(session, subscription_id=subscription_id, principal=principal)
    return SubscriptionOut.model_validate(sub)


@router.patch("/{subscription_id}", response_model=SubscriptionOut)
def update_subscription(
    subscription_id: SubscriptionId,
    patch: SubscriptionPatch,
    session: SessionDep,
    principal: SubmitPrincipal,
) -> SubscriptionOut:
    """Change a subscription's URL, events or description, or pause it (`active: false`)."""
    sub = service.update(session, subscription_id=subscription_id, patch=patch, principal=principal)
    return SubscriptionOut.model_validate(sub)


@router.delete("/{subscription_id}", response_model=SubscriptionOut)
def delete_subscription(
    subscription_id: SubscriptionId, session: SessionDep, principal: SubmitPrincipal
) -> SubscriptionOut:
    """Remove a subscription and its delivery log; answers what it was."""
    sub = service.delete(session, subscription_id=subscription_id, principal=principal)
    return SubscriptionOut.model_validate(sub)


@router.post("/{subscription_id}/rotate-secret", response_model=SubscriptionCreated)
def rotate_secret(
    subscription_id: SubscriptionId, session: SessionDep, principal: SubmitPrincipal
) -> SubscriptionCreated:
    """Replace the signing secret; the new one is in this answer only."""
    sub, secret = service.rotate(session, subscription_id=subscription_id, principal=principal)
    return _created(sub, secret)


@router.post(
    "/{subscription_id}/ping", status_code=status.HTTP_201_CREATED, response_model=DeliveryOut
)
def ping(
    subscription_id: SubscriptionId, session: SessionDep, principal: SubmitPrincipal
) -> DeliveryOut:
    """Send a `webhook.ping` event to this subscription, to check the receiver and its check."""
    row = service.ping(session, subscription_id=subscription_id, principal=principal)
    return service.outs(session, [row])[0]


@router.get("/{subscription_id}/deliveries", response_model=DeliveryPage)
def list_deliveries(
    subscription_id: SubscriptionId,
    session: SessionDep,
    principal: ReadPrincipal,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> DeliveryPage:
    """The delivery log: each event sent, its status and every attempt, newest first."""
    items, next_cursor = service.deliveries(
        session, subscription_id=subscription_id, principal=principal, limit=limit, cursor=cursor
    )
    return DeliveryPage(items=items, next_cursor=next_cursor)


@router.get("/{subscription_id}/deliveries/{delivery_id}", response_model=DeliveryOut)
def get_delivery(
    subscription_id: SubscriptionId,
    delivery_id: DeliveryId,
    session: SessionDep,
    principal: ReadPrincipal,
) -> DeliveryOut:
    """One delivery: its attempts and the event body it sends."""
    return service.delivery(
        session, subscription_id=subscription_id, delivery_id=delivery_id, principal=principal
    )


@router.post(
    "/{subscription_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_201_CREATED,
    response_model=DeliveryOut,
)
def redeliver(
    subscription_id: SubscriptionId,
    delivery_id: DeliveryId,
    session: SessionDep,
    principal: SubmitPrincipal,
) -> DeliveryOut:
    """Send a delivery's event again, as a new delivery of the same body and event id."""
    row = service.redeliver(
        session, subscription_id=subscription_id, delivery_id=delivery_id, principal=principal
    )
    return service.outs(session, [row])[0]
