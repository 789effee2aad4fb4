"""The outbox: a job's message goes to the broker after its transaction commits, never before,
and never for a transaction that rolled back; a refused new job is taken back."""

from __future__ import annotations

import json

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.errors import ServiceUnavailable
from app.kit import outbox
from tests.support import ServiceEnv

QUEUE = "gpu.outbox-test"  # no worker consumes it: the messages stay where we can read them


def _sent(broker: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["argsrepr"] for raw in broker.lrange(QUEUE, 0, -1)]


def test_messages_go_after_commit_and_never_after_rollback(service_env: ServiceEnv) -> None:
    broker = redis.Redis.from_url(service_env.broker_url)
    broker.delete(QUEUE)
    try:
        with get_sessionmaker()() as session:
            outbox.send_after_commit(session, outbox.RunJobMessage("job_rolled_back", QUEUE))
            session.execute(text("SELECT 1"))
            assert _sent(broker) == []  # nothing before the commit
            session.rollback()
            assert _sent(broker) == [] and outbox.pending(session) == []

            outbox.send_after_commit(session, outbox.RunJobMessage("job_committed", QUEUE))
            session.execute(text("SELECT 1"))
            assert _sent(broker) == []
            session.commit()
            outbox.flush(session)  # what the boundary does once commit() returned
            assert _sent(broker) == ["['job_committed']"]
            session.commit()  # a later commit sends nothing twice
            outbox.flush(session)
            assert _sent(broker) == ["['job_committed']"]
    finally:
        broker.delete(QUEUE)


def test_a_refused_message_is_undone_and_raised_only_when_it_has_an_undo(
    service_env: ServiceEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery import Celery

    import app.kit.queue
    from app.config import get_settings
    from app.kit.queue import celery_config

    dead = Celery("dead-broker")
    # Port 1 refuses connections at once; the client gives up after its publish retries.
    dead.conf.update(celery_config(get_settings()) | {"broker_url": "redis://127.0.0.1:1/0"})
    monkeypatch.setattr(app.kit.queue, "_client", dead)
    undone: list[int] = []

    def undo(session: Session) -> None:  # runs in a transaction of its own, after the commit
        undone.append(session.execute(text("SELECT 1")).scalar_one())

    with get_sessionmaker()() as session:
        outbox.send_after_commit(session, outbox.RunJobMessage("job_resent", QUEUE))
        session.commit()
        outbox.flush(session)  # a re-send the broker refused: logged, nothing to undo or raise
        assert undone == []

        outbox.send_after_commit(session, outbox.RunJobMessage("job_new", QUEUE, undo=undo))
        session.commit()
        with pytest.raises(ServiceUnavailable, match="broker did not accept the job"):
            outbox.flush(session)
        assert undone == [1]
        outbox.flush(session)  # raised and undone once
