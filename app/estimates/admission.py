"""The estimator's slots: every CPU-heavy estimate, from any route, runs in one of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.from_thread
from fastapi import FastAPI

from app.config import get_settings
from app.kit.admission import Admission, of_app

T = TypeVar("T")


def admission(app: FastAPI) -> Admission:
    """The app's limiter for CPU-heavy estimates."""
    settings = get_settings()
    return of_app(
        app,
        name="estimate_admission",
        what="the estimator is busy",
        slots=settings.estimate_slots,
        queue=settings.estimate_queue,
        wait_s=settings.estimate_wait_s,
    )


def run_in_slot(app: FastAPI, compute: Callable[[], T]) -> T:
    """`compute()` in one of the estimator's slots, from a sync route's worker thread (the
    limiter lives on the event loop); Busy (503 + Retry-After) when none comes in time."""
    limiter = admission(app)
    anyio.from_thread.run(limiter.acquire)
    try:
        return compute()
    finally:
        anyio.from_thread.run_sync(limiter.release)
