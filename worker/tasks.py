"""Celery tasks. Each takes ids, reloads its rows and is safe to run twice (acks are late)."""

from __future__ import annotations

import socket
from typing import Any

from app.catalog.prices.refresh import refresh_all
from app.kit.queue import (
    DELIVER_FOCUS_TASK,
    DELIVER_WEBHOOK_TASK,
    REFRESH_PRICES_TASK,
    SWEEP_WEBHOOKS_TASK,
)
from app.reports import delivery as focus_delivery
from app.webhooks import delivery
from worker import sweeper
from worker.celery_app import celery_app
from worker.jobs import run_job

__all__ = [
    "deliver_focus",
    "deliver_webhook",
    "echo",
    "refresh_prices",
    "run_job",
    "sweep_webhooks",
    "sweeper",
]


@celery_app.task(name="tunecost.echo", ignore_result=False)
def echo(payload: Any) -> dict[str, Any]:
    """Return the payload and who ran it: proves the broker → worker path end to end."""
    return {"payload": payload, "hostname": socket.gethostname()}


@celery_app.task(name=REFRESH_PRICES_TASK)
def refresh_prices() -> dict[str, str]:
    """Fetch and import every provider's price list (beat, when TUNECOST_PRICE_REFRESH_EVERY_H)."""
    return refresh_all()


@celery_app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt of a webhook delivery, if due; a failure schedules the next (with backoff)."""
    return delivery.deliver(delivery_id)


@celery_app.task(name=SWEEP_WEBHOOKS_TASK)
def sweep_webhooks() -> int:
    """Send again the deliveries whose message was lost (beat, every webhook_sweep_every_s)."""
    return delivery.sweep()


@celery_app.task(name=DELIVER_FOCUS_TASK)
def deliver_focus() -> dict[str, str]:
    """Write each changed billing period's FOCUS files (beat, every focus_delivery_every_h)."""
    return focus_delivery.deliver_all()
