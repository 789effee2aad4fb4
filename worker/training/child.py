"""The training child's side: run the job, send events to the parent, stop when told.

SIGTERM (from the parent's cancel or budget stop) sets a flag the training loop checks every
step; the loop then saves what it has and the child exits. The child also stops by itself when
its parent dies (prctl PDEATHSIG, and a getppid check), so a killed worker never leaves a GPU
busy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from worker.training.messages import (
    ErrorMessage,
    PhaseEvent,
    PipeMessage,
    ProgressEvent,
    ResultMessage,
    encode,
)


class Connection(Protocol):
    """The write end of the pipe to the parent (a billiard or multiprocessing Connection)."""

    def send(self, obj: Any) -> None: ...

    def close(self) -> None: ...


PARENT_CHECK_S = 1.0  # the child's sender thread notices an orphaned child this fast
PR_SET_PDEATHSIG = 1  # prctl(2) option: signal this process when its parent dies (Linux)


class EventSender:
    """Sends events from a thread, so training never waits on the pipe.

    Progress is latest-wins (a slow parent sees fewer steps, training is never held up); other
    events (phases) queue in order, behind any progress that came before them.
    """

    def __init__(self, conn: Connection, on_parent_gone: Callable[[], None]) -> None:
        self._conn = conn
        self._on_parent_gone = on_parent_gone
        self._cond = threading.Condition()
        self._queue: deque[PipeMessage] = deque()
        self._progress: ProgressEvent | None = None
        self._closing = False
        self._parent = os.getppid()
        self._thread = threading.Thread(target=self._run, name="tunecost-events", daemon=True)
        self._thread.start()

    def progress(self, message: ProgressEvent) -> None:
        """Replace the pending progress event."""
        with self._cond:
            self._progress = message
            self._cond.notify()

    def send(self, message: PipeMessage) -> None:
        """Queue an event that must not be dropped."""
        with self._cond:
            if self._progress is not None:
                self._queue.append(self._progress)
                self._progress = None
            self._queue.append(message)
            self._cond.notify()

    def close(self, final: PipeMessage) -> None:
        """Send what is pending, then `final`, and stop the thread."""
        self.send(final)
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        with contextlib.suppress(OSError):
            self._conn.close()

    def _take(self) -> tuple[list[PipeMessage], bool]:
        with self._cond:
            if not self._queue and self._progress is None and not self._closing:
                self._cond.wait(PARENT_CHECK_S)
            batch = list(self._queue)
            self._queue.clear()
            if self._progress is not None:
                batch.append(self._progress)
                self._progress = None
            return batch, self._closing

    def _run(self) -> None:
        while True:
            batch, closing = self._take()
            if os.getppid() != self._parent:
                self._on_parent_gone()
            for message in batch:
                try:
                    self._conn.send(encode(message))
                except OSError:  # the parent is gone: stop training, nobody is listening
                    self._on_parent_gone()
                    break
            if closing and not batch:
                return


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux)."""
    with contextlib.suppress(Exception):  # Linux only; elsewhere the sender thread's check remains
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)


def child_main(
    launch_json: dict[str, Any],
    out_dir: str,
    conn: Connection,
    environment: dict[str, str] | None = None,
) -> None:
    """Entry point of the training child: `launch_json` is a `Launch` dumped to JSON;
    `environment` is applied before torch is imported."""
    os.environ.update(environment or {})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in a terminal is the parent's to handle
    die_with_parent()
    sender = EventSender(conn, on_parent_gone=stop.set)
    final: PipeMessage
    try:
        from worker.training.errors import TrainingError
        from worker.training.job import run_training
        from worker.training.spec import parse_launch

        try:
            launch = parse_launch(launch_json)
            actuals = run_training(
                launch,
                out_dir=Path(out_dir),
                on_progress=sender.progress,
                stop_requested=stop.is_set,
                on_phase=lambda phase, info: sender.send(PhaseEvent(phase=phase, info=info)),
                on_eval=sender.send,
            )
            final = ResultMessage(actuals=actuals)
        except TrainingError as exc:
            final = ErrorMessage(kind=exc.kind, message=str(exc))
    except Exception as exc:  # a bug or an unforeseen library error: report it, never hang
        oom = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
        final = ErrorMessage(
            kind="out_of_memory" if oom else "internal",
            message=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    sender.close(final)
