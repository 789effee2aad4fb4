"""Events a tenant can subscribe to, and `emit`: one delivery per matching subscription.

An event is emitted inside the transaction that made it true (a job ended, a budget crossed a
threshold): its delivery rows are written there, and the `deliver_webhook` task of each is sent
once that transaction commits (app/kit/outbox.py). A rollback leaves neither. The body is fixed at
emit time, so every attempt and every redelivery sends the same bytes.

Body: `{"id": "evt_...", "type": "job.succeeded", "created_at": "...Z", "team": "ml",
"data": {...}}` — `id` is the event's, the same in each delivery of it (receivers dedupe on it).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.kit import outbox, redact
from app.kit.instants import iso_z
from app.kit.queue import CONTROL_QUEUE, DELIVER_WEBHOOK_TASK
from app.models import DeliveryStatus, Job, JobStatus, WebhookDelivery, WebhookSubscription
from app.models.base import new_id, utcnow


class EventType(StrEnum):
    """What a subscription can ask to be told about."""

    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_BUDGET_EXCEEDED = "job.budget_exceeded"  # stopped by its own max_cost_usd
    BUDGET_THRESHOLD_CROSSED = "budget.threshold_crossed"
    CALIBRATION_UPDATED = "calibration.updated"
    PING = "webhook.ping"  # sent on request, to check a receiver


# The job status each job event announces.
JOB_EVENTS = {
    JobStatus.SUCCEEDED: EventType.JOB_SUCCEEDED,
    JobStatus.FAILED: EventType.JOB_FAILED,
    JobStatus.CANCELLED: EventType.JOB_CANCELLED,
    JobStatus.BUDGET_EXCEEDED: EventType.JOB_BUDGET_EXCEEDED,
}


def body(*, event_id: str, type_: EventType, team: str | None, data: dict[str, Any]) -> str:
    """The JSON text of an event, as it is signed and sent."""
    document = {
        "id": event_id,
        "type": type_.value,
        "created_at": iso_z(utcnow()),
        "team": team,
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"))


def add_delivery(
    session: Session, *, subscription_id: str, event_id: str, type_: str, text: str
) -> WebhookDelivery:
    """A pending delivery of `text` to one subscription, sent once the transaction commits."""
    now = utcnow()
    delivery = WebhookDelivery(
        id=new_id("whd"),
        subscription_id=subscription_id,
        event_id=event_id,
        event_type=type_,
        body=text,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    outbox.send_after_commit(
        session, outbox.TaskMessage(DELIVER_WEBHOOK_TASK, (delivery.id,), CONTROL_QUEUE)
    )
    return delivery


def subscribers(
    session: Session, *, team: str | None, key_id: str | None, type_: EventType
) -> list[WebhookSubscription]:
    """Active subscriptions of the tenant (a team, or a team-less key) that want `type_`."""
    stmt = select(WebhookSubscription).where(WebhookSubscription.active.is_(True))
    if team is not None:
        stmt = stmt.where(WebhookSubscription.team == team)
    elif key_id is not None:
        stmt = stmt.where(
            WebhookSubscription.team.is_(None), WebhookSubscription.created_by_key_id == key_id
        )
    else:
        return []
    return [s for s in session.scalars(stmt) if type_.value in s.events]


def emit(
    session: Session,
    *,
    team: str | None,
    key_id: str | None,
    type_: EventType,
    data: dict[str, Any],
) -> str | None:
    """Queue `type_` with `data` to every subscription of the tenant that wants it.

    The tenant is `team`, or for a team-less owner the key `key_id`. Returns the event id, or
    None when nobody subscribed (nothing is written).
    """
    subs = subscribers(session, team=team, key_id=key_id, type_=type_)
    if not subs:
        return None
    event_id = new_id("evt")
    text = body(event_id=event_id, type_=type_, team=team, data=data)
    for sub in subs:
        add_delivery(session, subscription_id=sub.id, event_id=event_id, type_=type_, text=text)
    return event_id


def job_data(job: Job, tags: dict[str, str]) -> dict[str, Any]:
    """What a job event says about its job (the rest is at GET /v1/jobs/{id})."""
    return {
        "job": {
            "id": job.id,
            "status": str(job.status),
            "status_detail": redact.text(job.status_detail),
            "error": redact.text(job.error),
            "method": job.method,
            "model": job.model_ref,
            "gpu": job.gpu,
            "num_gpus": job.num_gpus,
            "team": job.team,
            "tags": tags,
            "attempts": job.attempts,
            "started_at": iso_z(job.started_at) if job.started_at else None,
            "finished_at": iso_z(job.finished_at) if job.finished_at else None,
            "max_cost_usd": job.max_cost_usd,
            "estimated_cost_usd": job.est_cost_usd,
            "actual_cost_usd": job.act_cost_usd,
            "actual_gpu_hours": job.act_gpu_hours,
            "cost_source": job.cost_source,
        }
    }
