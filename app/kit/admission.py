"""Bounded admission for CPU-heavy work: a few run, a few wait, the rest are told when to retry.

Without it, every concurrent heavy request took a thread (and memory) at once and the slowest
ones ran into pool and client timeouts. Here `slots` run at a time, up to `queue` more wait at
most `wait_s`, and anything past that is answered at once with 503 and Retry-After: a client
that retries later gets through, and the API keeps its threads, memory and connections for the
requests that only read.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from app.errors import ServiceUnavailable

# The Retry-After we suggest when the wait would be too long: about one heavy request's time.
RETRY_AFTER_S = 5


class Busy(ServiceUnavailable):
    """Every slot is taken and the queue is full (or the wait ran out)."""

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class Admission:
    """At most `slots` holders at once, at most `queue` waiting, each at most `wait_s` seconds."""

    def __init__(self, *, what: str, slots: int, queue: int, wait_s: float) -> None:
        self.what = what
        self.slots = slots
        self.queue = queue
        self.wait_s = wait_s
        self.running = 0
        self.waiting = 0
        self._semaphore = anyio.Semaphore(slots)

    def _busy(self, why: str) -> Busy:
        return Busy(
            f"{self.what}: {why}; retry after the Retry-After seconds",
            retry_after_s=RETRY_AFTER_S,
        )

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if need be; Busy (503) if none comes in time."""
        # The counters are only touched on the event loop's thread: no lock needed.
        if self.running >= self.slots and self.waiting >= self.queue:
            raise self._busy(f"{self.running} running and {self.waiting} waiting, the most allowed")
        self.waiting += 1
        try:
            with anyio.fail_after(self.wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            raise self._busy(f"no slot freed within {self.wait_s:g} s") from None
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        """Give back a slot taken by `acquire`."""
        self.running -= 1
        self._semaphore.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with`."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def of_app(app: Any, *, name: str, what: str, slots: int, queue: int, wait_s: float) -> Admission:
    """The app's limiter called `name`, made on first use (each belongs to its app's loop)."""
    found = getattr(app.state, name, None)
    if not isinstance(found, Admission):
        found = Admission(what=what, slots=slots, queue=queue, wait_s=wait_s)
        setattr(app.state, name, found)
    return found
