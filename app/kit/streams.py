"""Streamed responses whose blocking source is always closed, however the stream ends.

Starlette iterates a plain iterator in worker threads but never closes it: when the client goes
away mid-stream the generator stays suspended, holding whatever it holds (a pooled connection in
the middle of a COPY, a server-side cursor) until garbage collection closes it, if ever, and then
on the event loop's thread. Here the source is closed in a worker thread as soon as the response
ends for any reason (finished, client gone, cancelled), so a generator's `finally` (and the
context managers it is inside) release the connection at once: psycopg cancels an unfinished
COPY on the server and drains it, a cursor is closed, the session goes back to the pool.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

import anyio
from sqlalchemy.orm import Session
from starlette.responses import StreamingResponse
from starlette.types import Send

from app.db import get_sessionmaker

T = TypeVar("T")
_DONE = object()


class _Step:
    """One next(source) handed to a worker thread, which may never start it if cancelled first."""

    def __init__(self, source: Iterator[Any]) -> None:
        self.source = source
        self.lock = threading.Lock()
        self.state = "pending"  # -> "running" -> "done", or -> "skipped"
        self.done = threading.Event()

    def run(self) -> Any:
        with self.lock:
            if self.state == "skipped":
                return _DONE
            self.state = "running"
        try:
            return next(self.source, _DONE)
        finally:
            with self.lock:
                self.state = "done"
            self.done.set()

    def skip_unless_started(self) -> bool:
        """Mark it skipped if no thread started it; True when it did start."""
        with self.lock:
            if self.state == "pending":
                self.state = "skipped"
                return False
            return True


async def _step(source: Iterator[T], cancel: Callable[[], None] | None) -> Any:
    """next(source) in a worker thread; on cancellation, interrupt it and wait for it to end."""
    step = _Step(source)
    try:
        return await anyio.to_thread.run_sync(step.run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        # The client went away during a step. anyio never starts a call cancelled before a
        # thread took it; one that started (a slow FETCH, say) is interrupted through the
        # source's cancel() and waited for, so the generator is never closed while another
        # thread still runs it.
        if step.skip_unless_started():
            with anyio.CancelScope(shield=True):
                if cancel is not None and not step.done.is_set():
                    await anyio.to_thread.run_sync(cancel)
                await anyio.to_thread.run_sync(step.done.wait)
        raise


async def in_threads(source: Iterator[T]) -> AsyncGenerator[T, None]:
    """Items of a blocking iterator, each fetched in a worker thread; closes it at the end.

    A source with a `cancel()` method has it called (from another thread) when the stream is
    cancelled in the middle of a step.
    """
    cancel = getattr(source, "cancel", None)
    try:
        while True:
            item = await _step(source, cancel)
            if item is _DONE:
                return
            yield item
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)


class DatabaseStream:
    """An iterator over `produce(session)` in a session of its own, interruptible from outside.

    `cancel()` (any thread) asks the database to stop the statement in progress; `close()`
    ends the generator, which closes the session and returns its connection to the pool.
    """

    def __init__(self, produce: Callable[[Session], Iterator[Any]]) -> None:
        self._produce = produce
        self._raw: Any = None
        self._gen = self._run()

    def _run(self) -> Generator[Any, None, None]:
        with get_sessionmaker()() as session:
            self._raw = session.connection().connection.dbapi_connection
            yield from self._produce(session)

    def __iter__(self) -> DatabaseStream:
        return self

    def __next__(self) -> Any:
        return next(self._gen)

    def close(self) -> None:
        """End the stream and release its connection."""
        self._gen.close()

    def cancel(self) -> None:
        """Interrupt the statement running now (psycopg cancel; sqlite3 interrupt)."""
        raw = self._raw
        stop = getattr(raw, "cancel_safe", None) or getattr(raw, "interrupt", None)
        if stop is not None:
            stop()


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse over a blocking iterator that is closed when the response ends."""

    def __init__(
        self,
        content: Iterable[str | bytes],
        *,
        on_close: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._source = in_threads(iter(content))
        self._on_close = on_close
        super().__init__(self._source, **kwargs)

    async def stream_response(self, send: Send) -> None:
        """Send the body; whatever happens, close the source and then call on_close."""
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._source.aclose()
                finally:
                    if self._on_close is not None:
                        self._on_close()
