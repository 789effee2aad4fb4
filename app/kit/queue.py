"""The Celery configuration shared by the API (which only sends) and the worker (which runs).

The API enqueues by task name and never imports `worker/`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.config import Settings, get_settings

RUN_JOB_TASK = "tunecost.run_job"
QUEUE_PREFIX = "gpu."
# Short tasks that must not wait behind training (webhook deliveries, the FOCUS delivery): a
# worker started with `-Q tunecost.control` serves them (README "Webhooks"); GPU workers do not,
# as their pool processes are busy training for hours.
CONTROL_QUEUE = "tunecost.control"
DELIVER_WEBHOOK_TASK = "tunecost.deliver_webhook"
SWEEP_WEBHOOKS_TASK = "tunecost.sweep_webhooks"
DELIVER_FOCUS_TASK = "tunecost.deliver_focus"
FILL_FOCUS_LINES_TASK = "tunecost.fill_focus_lines"


def queue_for(gpu: str, num_gpus: int = 1) -> str:
    """The queue of jobs of this GPU kind and size: `gpu.A100-80GB`, `gpu.A100-80GB.x4`.

    A worker consumes the queue of each size up to its device count, so it never takes a job it
    could never hold.
    """
    return QUEUE_PREFIX + gpu + (f".x{num_gpus}" if num_gpus > 1 else "")


def queues_up_to(gpu: str, devices: int) -> list[str]:
    """The queues a worker of this GPU kind with `devices` devices consumes."""
    return [queue_for(gpu, n) for n in range(1, devices + 1)]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for long GPU jobs: JSON, late acks, one job per pool process at a time."""
    transport_options: dict[str, Any] = {
        # A job may run for days; the broker must not hand an unacked one to another worker
        # while the first is still training.
        "visibility_timeout": settings.visibility_timeout_s,
    }
    redis = settings.broker_url.startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url,
        # Job state lives in the database; the backend only serves diagnostic tasks (echo).
        "result_backend": settings.broker_url if redis else None,
        # kombu's SQLAlchemy transport hands these options to create_engine: send none there.
        "broker_transport_options": transport_options if redis else {},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_default_queue": queue_for("cpu"),
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_ignore_result": True,
        "beat_schedule": _beat_schedule(settings),
    }


REFRESH_PRICES_TASK = "tunecost.refresh_prices"


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    """Periodic tasks for `celery beat`: the webhook sweep, the FOCUS lines jobs lack, the FOCUS
    delivery when it is on, and the price refresh when it is on."""
    schedule: dict[str, Any] = {
        "sweep-webhooks": {
            "task": SWEEP_WEBHOOKS_TASK,
            "schedule": settings.webhook_sweep_every_s,
            "options": {"queue": CONTROL_QUEUE},
        }
    }
    schedule["fill-focus-lines"] = {
        "task": FILL_FOCUS_LINES_TASK,
        "schedule": settings.focus_lines_every_s,
        "options": {"queue": CONTROL_QUEUE},
    }
    if settings.focus_delivery_every_h is not None:
        schedule["deliver-focus"] = {
            "task": DELIVER_FOCUS_TASK,
            "schedule": settings.focus_delivery_every_h * 3600.0,
            "options": {"queue": CONTROL_QUEUE},
        }
    if settings.price_refresh_every_h is not None:
        schedule["refresh-prices"] = {
            "task": REFRESH_PRICES_TASK,
            "schedule": settings.price_refresh_every_h * 3600.0,
        }
    return schedule


_client: Celery | None = None


def get_client() -> Celery:
    """A Celery app used only to send tasks and ping workers (no tasks registered)."""
    global _client
    if _client is None:
        _client = Celery("tunecost-client")
        _client.conf.update(celery_config(get_settings()))
    return _client


def enqueue_job(job_id: str, *, queue: str) -> None:
    """Send the run_job task for `job_id` to `queue`; call only after the job row is committed."""
    get_client().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def send(task: str, *, args: list[Any], queue: str, countdown: float | None = None) -> None:
    """Send task `task` by name to `queue`, to run no sooner than `countdown` seconds from now."""
    get_client().send_task(task, args=args, queue=queue, countdown=countdown)
