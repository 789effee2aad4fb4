"""Run a training job in a child process that the parent can always end.

The child is started with the `spawn` method (never fork after CUDA: pytorch issue 68861) of
billiard, Celery's multiprocessing: the stdlib refuses to start children from Celery's daemonic
pool processes, billiard does not (the child dies with its parent, so none is orphaned). It
streams events to the parent over a one-way pipe: progress after every optimizer step (a sender
thread keeps only the latest, so a slow parent never stalls training), then one `result` or
`error`. The parent enforces cancel and the budget: SIGTERM asks the child to stop at the next
step and save; SIGKILL follows after a grace period. CUDA is only ever initialised in the child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import billiard
import psutil
from pydantic import ValidationError

from app.jobs.actuals import JobActuals
from worker.training import metering
from worker.training.child import child_main
from worker.training.devices import DeviceSet, parse_devices
from worker.training.errors import JobSpecError
from worker.training.launch import launcher_main
from worker.training.messages import (
    DoneMessage,
    ErrorMessage,
    PhaseEvent,
    PipeMessage,
    ProgressEvent,
    ResultMessage,
    decode,
)
from worker.training.spec import Launch

log = logging.getLogger(__name__)

Status = Literal["succeeded", "failed", "cancelled", "budget_exceeded"]
EventCallback = Callable[[PipeMessage], None]

DEFAULT_GRACE_S = 5.0  # SIGTERM to SIGKILL: time to finish a step and save a small artifact
BUDGET_GRACE_S = 3.0  # the child stops itself at its next step; the parent steps in after this
# Phases in which the child checks the budget itself (before each step or evaluation batch) and
# then saves what it has; before them (start-up, loading, tokenizing) the parent ends it at once.
CHECKS_ITS_BUDGET = frozenset({"training", "evaluating", "saving"})
POLL_S = 0.2  # how long the parent blocks waiting for an event before re-checking the child
CANCEL_CHECK_S = 1.0  # `should_cancel` may hit the database: ask at most this often


@dataclass
class RunOutcome:
    """How a child run ended: the status, the actuals (partial when the child was killed), why."""

    status: Status
    actuals: JobActuals | None
    error_kind: str | None = None
    error: str | None = None
    exit_code: int | None = None
    last_progress: ProgressEvent | None = None
    events_received: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = asdict(self)
        out["actuals"] = self.actuals.model_dump(mode="json") if self.actuals else None
        out["last_progress"] = (
            self.last_progress.model_dump(mode="json") if self.last_progress else None
        )
        return out


class TrainingChild:
    """One training child process, seen from the parent."""

    def __init__(self, launch: Launch, *, out_dir: Path, devices: DeviceSet | None = None) -> None:
        self.launch = launch
        self.out_dir = Path(out_dir)
        self.devices = devices
        self._ctx = billiard.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None  # the read end of a billiard Pipe
        self._stop_reason: Status | None = None
        self._kill_at: float | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        """True while the child process runs."""
        return self._proc is not None and self._proc.is_alive()

    def start(self) -> None:
        """Start the child process."""
        reader, writer = self._ctx.Pipe(duplex=False)
        several = (
            self.devices is not None and self.devices.world_size > 1
        ) or self.launch.spec.nodes > 1
        self._proc = self._ctx.Process(  # type: ignore[attr-defined]  # celery-types types billiard.get_context as the stdlib's BaseContext, which has no Process
            # One device trains in the child itself (no process group, no rendezvous port, no
            # second interpreter to start); several make the child torch's elastic launcher.
            target=launcher_main if several else child_main,
            # JSON across the process boundary; the child validates it again
            args=(
                self.launch.model_dump(mode="json"),
                str(self.out_dir),
                writer,
                self._environment(),
            ),
            name=f"tunecost-train-{self.launch.run.job_id}",
        )
        self._proc.start()
        writer.close()  # only the child writes: EOF reaches us when it exits
        self._conn = reader

    def _environment(self) -> dict[str, str]:
        return self.devices.environment() if self.devices is not None else {}

    def request_stop(self, reason: Status, *, grace_s: float = DEFAULT_GRACE_S) -> None:
        """SIGTERM now, SIGKILL after `grace_s` (enforced by `wait`/`stop`); returns at once."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            if self._kill_at is None:
                self._kill_at = time.monotonic() + grace_s
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)

    def stop(self, grace_s: float = DEFAULT_GRACE_S, reason: Status = "cancelled") -> None:
        """End the child: SIGTERM, then SIGKILL if it still runs after `grace_s`; blocks."""
        self.request_stop(reason, grace_s=grace_s)
        if self._proc is None:
            return
        self._proc.join(grace_s)
        self._enforce_kill(force=True)

    def _enforce_kill(self, *, force: bool = False) -> None:
        due = self._kill_at is not None and time.monotonic() >= self._kill_at
        if (force or due) and self.is_alive():
            # The launcher's ranks first: they would die with it (PDEATHSIG), but not at once.
            for process in self._descendants():
                with contextlib.suppress(psutil.Error):
                    process.kill()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5)

    def _descendants(self) -> list[psutil.Process]:
        try:
            return list(psutil.Process(self._proc.pid).children(recursive=True))
        except psutil.Error:
            return []

    def wait(
        self,
        *,
        on_event: EventCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        on_tick: Callable[[], None] | None = None,
    ) -> RunOutcome:
        """Pump events until the child ends, enforcing cancel and budget; return the outcome.

        `should_cancel` and `on_tick` (e.g. a heartbeat) run about once a second, events or not.
        """
        assert self._proc is not None and self._conn is not None, "start() first"
        spec = self.launch.spec
        max_cost = self.launch.budget_usd
        accrued = metering.cost_clock(
            started_at=self.launch.run.started_at,
            num_gpus=spec.num_gpus,
            price_per_gpu_hour=spec.price_per_gpu_hour,
        )
        result: JobActuals | None = None
        error: ErrorMessage | None = None
        done = False  # a node other than 0 of a job across nodes: its ranks ended well
        last_progress: ProgressEvent | None = None
        events = 0
        next_cancel_check = 0.0
        over_budget_since: float | None = None
        phase: str | None = None  # the child's, from its phase events; None while it starts
        eof = False
        while True:
            if not eof:
                try:
                    if self._conn.poll(POLL_S):
                        message = _decoded(self._conn.recv())
                        events += 1
                        if isinstance(message, ResultMessage):
                            result = message.actuals
                        elif isinstance(message, ErrorMessage):
                            error = message
                        elif isinstance(message, ProgressEvent):
                            last_progress = message
                        elif isinstance(message, PhaseEvent):
                            phase = message.phase
                        elif isinstance(message, DoneMessage):
                            done = True
                        if on_event is not None:
                            self._guarded(on_event, message)
                except (EOFError, OSError):
                    eof = True  # the child closed its end: it has exited or is exiting
            elif self.is_alive():
                self._proc.join(POLL_S)
            if eof and not self.is_alive():
                break
            now = time.monotonic()
            if now >= next_cancel_check:
                next_cancel_check = now + CANCEL_CHECK_S
                if on_tick is not None:
                    self._guarded(on_tick)
                if self._stop_reason is None and should_cancel and self._guarded(should_cancel):
                    self.request_stop("cancelled", grace_s=grace_s)
            if max_cost is not None and self._stop_reason is None and accrued() >= max_cost:
                over_budget_since = over_budget_since or now
                if phase not in CHECKS_ITS_BUDGET:
                    # starting, loading the model or tokenizing: no step to stop at, nothing
                    # to save; every second more is money past the budget
                    self.request_stop("budget_exceeded", grace_s=0)
                elif now - over_budget_since >= BUDGET_GRACE_S:
                    self.request_stop("budget_exceeded", grace_s=grace_s)
            self._enforce_kill()
        self._proc.join()
        exit_code = self._proc.exitcode
        self._conn.close()
        if done and result is None and error is None:
            # Node 0's rank 0 meters the job; this node only says its ranks ended well.
            return RunOutcome(
                self._stop_reason or "succeeded", None, exit_code=exit_code, events_received=events
            )
        return self._outcome(result, error, last_progress, exit_code, events, accrued())

    @staticmethod
    def _guarded(callback: Callable[..., Any], *args: Any) -> Any:
        try:
            return callback(*args)
        except Exception:  # a failing consumer (database down) must not orphan the child
            log.warning("callback %r failed; the run goes on", callback, exc_info=True)
            return None

    def _outcome(
        self,
        result: JobActuals | None,
        error: ErrorMessage | None,
        last_progress: ProgressEvent | None,
        exit_code: int | None,
        events: int,
        cost_now: float,
    ) -> RunOutcome:
        outcome = RunOutcome(
            "failed", None, exit_code=exit_code, last_progress=last_progress, events_received=events
        )
        if result is not None:
            outcome.actuals = result
            # A run that completed is a success even if a stop raced with its last step.
            child_status = _status_for(result.stop_reason)
            outcome.status = (
                child_status if child_status == "succeeded" else self._stop_reason or child_status
            )
            return outcome
        outcome.actuals = self._partial_actuals(last_progress, cost_now)
        if self._stop_reason is not None:
            outcome.status = self._stop_reason
        elif error is not None:
            outcome.error_kind = error.kind
            outcome.error = error.message
            if error.traceback:
                outcome.detail["traceback"] = error.traceback
        else:
            outcome.error_kind = "child_died"
            outcome.error = f"the training process exited with code {exit_code} without a result"
            if exit_code == -signal.SIGKILL:
                outcome.error += (
                    " (SIGKILL from outside: usually the kernel's out-of-memory killer)"
                )
            elif exit_code is not None and exit_code < 0:
                outcome.error += f" (killed by {signal.Signals(-exit_code).name})"
        return outcome

    def _partial_actuals(self, last_progress: ProgressEvent | None, cost_now: float) -> JobActuals:
        """What the parent knows when the child left no result: time and money, last progress."""
        spec = self.launch.spec
        wall_s = time.time() - self.launch.run.started_at
        num_gpus = spec.num_gpus
        return JobActuals(
            partial=True,
            wall_s=wall_s,
            gpu_hours=wall_s / metering.HOUR_S * num_gpus,
            num_gpus=num_gpus,
            world_size=num_gpus,
            price_per_gpu_hour=spec.price_per_gpu_hour,
            cost_usd=cost_now,
            steps=last_progress.step if last_progress else 0,
            tokens=last_progress.tokens if last_progress else 0,
            final_loss=last_progress.loss if last_progress else None,
        )


def _decoded(raw: object) -> PipeMessage:
    """A message from the child, validated on this side of the pipe (or why it is not)."""
    try:
        return decode(raw)
    except ValidationError as exc:  # the child and this parent disagree on the contract: a bug
        return ErrorMessage(kind="internal", message=f"the child's message is not valid: {exc}")


def _status_for(stop_reason: str | None) -> Status:
    if stop_reason == "budget_exceeded":
        return "budget_exceeded"
    if stop_reason == "cancelled":
        return "cancelled"
    return "succeeded"


def run_job(
    launch: Launch,
    *,
    devices: Sequence[str],
    out_dir: Path,
    on_event: EventCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    on_start: Callable[[TrainingChild], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> RunOutcome:
    """Train `launch` on `devices`, the device set the scheduler gave this job; the outcome.

    `devices` holds one id per rank: `CUDA_VISIBLE_DEVICES` entries on a GPU worker ("0", "3" or
    GPU UUIDs; the job's processes see only those), or CPU slots ("cpu", "cpu:1") on a CPU-only
    worker. Its length must equal the spec's devices per node (`num_gpus` on one node).
    The call blocks until every process of the job has ended; the devices are free again when
    it returns. Callbacks are those of `run_in_child`.
    """
    try:
        device_set = parse_devices(devices)
        if launch.spec.gpus_per_node != device_set.world_size:
            where = "" if launch.spec.nodes == 1 else " on each of its nodes"
            raise JobSpecError(
                f"the job needs {launch.spec.gpus_per_node} devices{where} but was given "
                f"{device_set.world_size} ({', '.join(device_set.ids)})"
            )
    except JobSpecError as exc:
        return RunOutcome("failed", None, error_kind=exc.kind, error=str(exc))
    child = TrainingChild(launch, out_dir=out_dir, devices=device_set)
    return _start_and_wait(
        child,
        on_event=on_event,
        should_cancel=should_cancel,
        grace_s=grace_s,
        on_start=on_start,
        on_tick=on_tick,
    )


def run_in_child(
    launch: Launch,
    *,
    out_dir: Path,
    on_event: EventCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    on_start: Callable[[TrainingChild], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> RunOutcome:
    """Train `launch` in a spawned child, stream its events to `on_event`, return the outcome.

    `should_cancel` and `on_tick` run about once a second; `on_start` receives the child (to
    call `stop()` from elsewhere, or to record its pid). Events are `PipeMessage`s
    (worker/training/messages.py): phases, progress, then one result or error. The child sees the
    worker's devices as they are; `run_job` confines a job to its own device set.
    """
    child = TrainingChild(launch, out_dir=out_dir)
    return _start_and_wait(
        child,
        on_event=on_event,
        should_cancel=should_cancel,
        grace_s=grace_s,
        on_start=on_start,
        on_tick=on_tick,
    )


def _start_and_wait(
    child: TrainingChild,
    *,
    on_event: EventCallback | None,
    should_cancel: Callable[[], bool] | None,
    grace_s: float,
    on_start: Callable[[TrainingChild], None] | None,
    on_tick: Callable[[], None] | None,
) -> RunOutcome:
    child.start()
    try:
        if on_start is not None:
            on_start(child)
        return child.wait(
            on_event=on_event, should_cancel=should_cancel, grace_s=grace_s, on_tick=on_tick
        )
    except BaseException:
        # The caller is leaving (an interrupt, a timeout, a bug in a callback it passed): the
        # training processes must not outlive it.
        child.stop(grace_s=0)
        raise


class Throttle:
    """Wraps an event callback: progress at most every `interval_s`, other events always.

    For a consumer that writes to a database: `on_event=Throttle(write_event, interval_s=2)`.
    Call `flush()` at the end to deliver the last progress event if it was held back.
    """

    def __init__(self, callback: EventCallback, *, interval_s: float) -> None:
        self._callback = callback
        self._interval_s = interval_s
        self._next = 0.0
        self._held: PipeMessage | None = None

    def __call__(self, message: PipeMessage) -> None:
        if not isinstance(message, ProgressEvent):
            self.flush()
            self._callback(message)
            return
        now = time.monotonic()
        if now < self._next:
            self._held = message
            return
        self._held = None
        self._next = now + self._interval_s
        self._callback(message)

    def flush(self) -> None:
        """Deliver the held-back progress event, if any."""
        if self._held is not None:
            held, self._held = self._held, None
            self._callback(held)
