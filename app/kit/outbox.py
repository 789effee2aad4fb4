"""Celery messages sent after the transaction that made them true commits, from one place.

A service that changes a row a worker must act on (a new queued job, a job re-queued after its
worker died) calls `send_after_commit` in the same transaction; the session keeps the message,
and the boundary that commits (`app.db.session_scope`) sends it once the commit succeeded and
the connection is back in the pool (`flush`). A rollback drops it. So no route or sweeper sends
by hand, and a worker never receives an id whose row is not committed.

When the broker refuses a message, its `undo` (if any) runs in a new transaction on the same
database and `flush` raises `ServiceUnavailable`: a submit leaves nothing behind and the client
retries with the same Idempotency-Key. A message without an undo (a re-send) is only logged:
the sweeper sends queued jobs again later (`recovery.resend_queued`). Other tasks (`TaskMessage`:
a webhook delivery, say) are logged too; their own sweep sends them again from the rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.errors import ServiceUnavailable
from app.kit import queue

log = logging.getLogger(__name__)

_PENDING = "tunecost.outbox"  # `Session.info` key: messages of the open transaction
_COMMITTED = "tunecost.outbox.committed"  # messages whose transaction committed, not yet sent


@dataclass(frozen=True)
class RunJobMessage:
    """The `run_job` task for one job, and how to take the job back if the broker refuses it."""

    job_id: str
    queue: str
    undo: Callable[[Session], None] | None = None
    copies: int = 1  # a job across nodes: one message per node (app/jobs/gang.py)


@dataclass(frozen=True)
class TaskMessage:
    """Any other task, by name, with its (JSON) arguments and queue, after an optional delay."""

    task: str
    args: tuple[Any, ...]
    queue: str
    countdown: float | None = None


Message = RunJobMessage | TaskMessage


def send_after_commit(session: Session, message: Message) -> None:
    """Send `message` once this session's transaction commits; drop it if it rolls back."""
    session.info.setdefault(_PENDING, []).append(message)


def pending(session: Session) -> list[Message]:
    """The messages waiting for this session's commit."""
    return list(session.info.get(_PENDING, []))


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    # The connection is still checked out here: sending waits for `flush`.
    session.info.setdefault(_COMMITTED, []).extend(session.info.pop(_PENDING, []))


def flush(session: Session) -> None:
    """After a commit: send what it committed; 503 if a message with an undo was refused.

    Called by the boundary that committed (`app.db.session_scope`), when the session holds no
    connection: a slow or absent broker never keeps a database connection waiting.
    """
    messages: list[Message] = session.info.pop(_COMMITTED, [])
    refused: list[str] = []
    for message in messages:
        if isinstance(message, TaskMessage):
            _send_task(message)
            continue
        try:
            for _ in range(message.copies):
                queue.enqueue_job(message.job_id, queue=message.queue)
        except Exception as exc:  # any transport error: the broker did not take the message
            if message.undo is None:
                log.warning(
                    "job %s: the broker refused its message (%s); the sweeper sends it again",
                    message.job_id,
                    exc,
                )
                continue
            with Session(bind=session.get_bind()) as undo_session, undo_session.begin():
                message.undo(undo_session)
            refused.append(type(exc).__name__)
    if refused:
        raise ServiceUnavailable(
            f"the broker did not accept the job ({', '.join(refused)}); nothing was kept, "
            "retry with the same Idempotency-Key"
        )


def _send_task(message: TaskMessage) -> None:
    try:
        queue.send(
            message.task, args=list(message.args), queue=message.queue, countdown=message.countdown
        )
    except Exception as exc:  # any transport error: the task's own sweep sends it again
        log.warning("%s%s: the broker refused it (%s)", message.task, message.args, exc)
