"""Engine and session factory; one session per request, committed or rolled back at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings
from app.kit import outbox


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and foreign keys, PostgreSQL a pre-pinged pool."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a power cut may lose
            # the last commits but never corrupts the file (sqlite.org/pragma.html#pragma_
            # synchronous). FULL made every stored estimate or job event wait for an fsync.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        # Fail fast when the database is down instead of hanging the request.
        connect_args={"connect_timeout": 3},
    )


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database."""
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    """The session factory bound to the process-wide engine."""
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session for work outside a request (worker, CLI): commit on success, else roll back."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
        outbox.flush(session)  # the messages this transaction queued, now that it committed
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_db() -> Iterator[Session]:
    """FastAPI dependency: the request's session, committed when the handler returns."""
    with session_scope() as session:
        yield session


# scope="function": commit (or roll back) when the handler returns, BEFORE the response is sent,
# so a client never sees 201 for a row whose commit then failed. (FastAPI's default for yield
# dependencies runs their exit after the response.)
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
