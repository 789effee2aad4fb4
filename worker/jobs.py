"""The `tunecost.run_job` task: claim the job, train it in a child process, meter and store it.

The task takes only the job id and reloads the row; it is safe to deliver twice (acks are late).
It first takes the job's `num_gpus` devices of its worker (worker/devices.py; the job stays
queued while they are held by other jobs), then claims the job and trains on those devices.
The training runs in a spawned child (worker/training/runner.py) so that cancel and budget stops
really end it. While it runs, this process writes throttled progress events, refreshes the job's
heartbeat and polls for a cancel request in one query every few seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.exc import OperationalError

from app.config import get_settings
from app.evals.points import EvalPoint
from app.jobs.artifacts import artifact_url
from app.jobs.metered import Artifact, Metered
from app.kit import redact
from app.kit.queue import RUN_JOB_TASK
from app.kit.storage import open_file
from app.models import JobStatus
from worker import devices, job_rows
from worker.celery_app import celery_app
from worker.job_rows import Claim
from worker.training import runner
from worker.training.messages import PhaseEvent, PipeMessage, ProgressEvent
from worker.training.spec import Launch, RunContext

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0  # progress rows at most this often per job (and always the last one)
# Heartbeat + cancel poll period: the heartbeat interval, but never slower than this, so that a
# cancel is seen within ~2 s and the child (5 s grace) is gone well within 10 s.
MAX_CHECK_S = 2.0
STOP_GRACE_S = 5.0  # SIGTERM → SIGKILL: time for a step to finish and a small artifact to save
COPY_CHUNK_BYTES = 1024 * 1024
# A job waiting for its worker's devices asks the database at most this often whether it was
# cancelled meanwhile (the wait itself looks at the device locks every WAIT_POLL_S).
DEVICE_WAIT_CHECK_S = 5.0


class JobInputError(Exception):
    """Something the job needs is missing (its dataset file, say): the job fails with this."""


def _copy_dataset(url: str | None, dest_dir: Path) -> Path:
    if not url:
        raise JobInputError("the job's dataset was deleted; upload it again and resubmit")
    # The stored name's suffix (data.csv.gz, data.parquet...) tells a CSV apart from JSON Lines.
    stored = url.rstrip("/").rsplit("/", 1)[-1]
    local = dest_dir / ("data" + stored[stored.index(".") :] if "." in stored else "data.jsonl")
    try:
        with open_file(url, "rb") as src, local.open("wb") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK_BYTES)
    except FileNotFoundError:
        raise JobInputError(f"the dataset file {url} is missing from storage") from None
    return local


def launch_of(claim: Claim, *, dataset_path: Path) -> Launch:
    """The claimed job's spec and this attempt's run context, as the training child takes them."""
    return Launch(
        spec=claim.spec,
        run=RunContext(
            job_id=claim.job_id,
            dataset_path=str(dataset_path),
            dataset_columns=claim.dataset_columns,
            model_roots=[str(p) for p in get_settings().resolved_model_roots()],
            started_at=claim.started_at_epoch,
            billed_usd=claim.billed_usd,  # the budget is the job's, not the attempt's
        ),
    )


def _strip_server_paths(local_dir: Path) -> None:
    """peft writes the base model's absolute folder into adapter_config.json: keep it relative.

    The artifact is handed to clients; the path relative to the model root names the same
    model to anyone with the same model roots, and reveals nothing about this server.
    """
    for config in local_dir.rglob("adapter_config.json"):
        data = json.loads(config.read_text(encoding="utf-8"))
        base = data.get("base_model_name_or_path")
        if isinstance(base, str) and base.startswith("/"):
            data["base_model_name_or_path"] = redact.model_path(base)
            config.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def _upload_artifact(job_id: str, local_dir: Path) -> tuple[str, int, int]:
    """Copy the artifact folder to storage; (URL, total bytes, bytes of weight files)."""
    from fsspec.core import url_to_fs

    _strip_server_paths(local_dir)
    url = artifact_url(job_id)
    fs, root = url_to_fs(url)
    total = weights = 0
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        dest = f"{root}/{path.relative_to(local_dir).as_posix()}"
        fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), dest)
        size = path.stat().st_size
        total += size
        if path.suffix in (".safetensors", ".bin"):
            weights += size
    return url, total, weights


def _event_writer(claim: Claim) -> runner.EventCallback:
    def write(message: PipeMessage) -> None:
        if isinstance(message, EvalPoint):
            job_rows.add_eval(claim.job_id, attempt=claim.attempt, point=message)
            return
        if isinstance(message, PhaseEvent):
            info = ", ".join(f"{k}={v}" for k, v in message.info.items())
            text = message.phase + (f" ({info})" if info else "")
            job_rows.add_status_event(
                claim.job_id, attempt=claim.attempt, message=text, kind="phase"
            )
        elif isinstance(message, ProgressEvent):
            job_rows.add_progress(claim.job_id, attempt=claim.attempt, events=[message])

    return write


class _Watch:
    """Heartbeat and cancel poll in one query every few seconds, from a thread.

    It beats for the whole attempt (copying the dataset, training, uploading the artifact), so
    a slow upload is never taken for a dead worker. `should_cancel` (polled by the runner) only
    reads what the thread saw: a cancel request, or that another attempt owns the job now.
    """

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.every = min(get_settings().heartbeat_interval_s, MAX_CHECK_S)
        self.lost = False
        self.cancelled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunecost-job-beat", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def should_cancel(self) -> bool:
        """True once a cancel was requested or the job was taken over."""
        return self.cancelled or self.lost

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                status = job_rows.beat(self.claim.job_id, attempt=self.claim.attempt)
            except Exception:  # the database is briefly away: keep going, try again
                log.warning("heartbeat of job %s failed", self.claim.job_id, exc_info=True)
                continue
            if status is None:
                self.lost = True  # another attempt owns the job now; stop ours
                log.warning("job %s is no longer ours; stopping its child", self.claim.job_id)
                return
            if status == JobStatus.CANCEL_REQUESTED:
                self.cancelled = True


def _record_pid(claim: Claim) -> Callable[[runner.TrainingChild], None]:
    def on_start(child: runner.TrainingChild) -> None:
        job_rows.add_status_event(
            claim.job_id,
            attempt=claim.attempt,
            message=f"training process started (pid {child.pid})",
        )

    return on_start


def _finish(claim: Claim, outcome: runner.RunOutcome, local_artifact: Path) -> None:
    actuals = outcome.actuals
    status = JobStatus(outcome.status)
    artifact = None
    if status != JobStatus.FAILED and local_artifact.is_dir() and any(local_artifact.iterdir()):
        url, total, weights = _upload_artifact(claim.job_id, local_artifact)
        artifact = Artifact(url=url, total_bytes=total)
        if actuals is not None:
            actuals = actuals.model_copy(update={"artifact_weights_bytes": weights})
    detail = {
        JobStatus.SUCCEEDED: "finished",
        JobStatus.CANCELLED: "cancelled; the training process was stopped",
        JobStatus.BUDGET_EXCEEDED: "stopped: the accrued cost reached max_cost_usd",
        JobStatus.FAILED: None,
    }[status]
    error = f"{outcome.error_kind}: {outcome.error}" if status == JobStatus.FAILED else None
    job_rows.finish(
        claim.job_id,
        attempt=claim.attempt,
        status=status,
        detail=detail,
        error=error,
        result=Metered(actuals=actuals, artifact=artifact),
        last_progress=outcome.last_progress,
    )


@celery_app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    """Run job `job_id` to its end; returns a one-line summary (for the worker's log)."""
    hostname = run_job.request.hostname or "worker"
    settings = get_settings()
    with devices.running_job(nodename=hostname, settings=settings, job_id=job_id) as ours:
        if not ours:
            log.info("run_job %s skipped: another process of this worker runs it", job_id)
            return "skipped: another process of this worker runs it"
        allocator = devices.Allocator(devices.worker_devices(nodename=hostname, settings=settings))
        lease = _take_devices(job_id, hostname=hostname, allocator=allocator)
        if isinstance(lease, str):
            return lease
        with lease:
            return _claim_and_run(job_id, hostname=hostname, lease=lease)


def _take_devices(
    job_id: str, *, hostname: str, allocator: devices.Allocator
) -> devices.DeviceLease | str:
    """The job's devices once they are free (the job stays queued meanwhile), or why not."""
    needed = job_rows.devices_needed(job_id)
    if needed is None:
        return f"skipped: job {job_id} is gone or has ended"
    if needed > allocator.total:
        # Only a worker started with a hand-written -Q list gets here: the queue of each job
        # size names it, and a worker consumes only the sizes it has devices for.
        reason = (
            f"the job needs {needed} devices but worker {hostname} has {allocator.total}; it "
            f"was sent to a worker that consumes a queue of a size it cannot hold"
        )
        job_rows.fail_unclaimed(job_id, reason=reason)
        return f"failed: {reason}"
    lease = allocator.try_acquire(needed)
    if lease is not None:
        return lease
    job_rows.note_waiting(
        job_id,
        detail=f"waiting on {hostname} for {needed} of its {allocator.total} devices to be free",
    )
    next_check = time.monotonic() + DEVICE_WAIT_CHECK_S

    def ended() -> bool:
        nonlocal next_check
        if time.monotonic() < next_check:
            return False
        next_check = time.monotonic() + DEVICE_WAIT_CHECK_S
        return job_rows.devices_needed(job_id) is None  # cancelled or deleted while waiting

    lease = allocator.acquire(needed, should_stop=ended)
    return lease if lease is not None else f"skipped: job {job_id} ended while waiting for devices"


def _claim_and_run(job_id: str, *, hostname: str, lease: devices.DeviceLease) -> str:
    claimed = job_rows.claim(job_id, hostname=hostname)
    if isinstance(claimed, job_rows.Skip):
        log.info("run_job %s skipped: %s", job_id, claimed.reason)
        return f"skipped: {claimed.reason}"
    claim = claimed
    try:
        return _run(claim, lease)
    except Exception as exc:  # a bug or an unforeseen failure: fail the job, keep the worker
        log.exception("run_job %s crashed", job_id)
        job_rows.finish(
            job_id,
            attempt=claim.attempt,
            status=JobStatus.FAILED,
            detail=None,
            error=f"internal error in the worker: {type(exc).__name__}: {exc}",
        )
        return f"failed: {exc}"


@contextlib.contextmanager
def _pinned(cores: set[int] | None) -> Iterator[None]:
    """Run the block (and the training child it spawns, which inherits it) on `cores` only.

    A job on logical CPU devices gets its devices' share of the cores, so jobs running side by
    side do not fight over them; the child's thread count follows its CPU affinity
    (worker/training/cpu_threads.py).
    """
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _run(claim: Claim, lease: devices.DeviceLease) -> str:
    job_id = claim.job_id
    held = ",".join(str(i) for i in lease.indexes)
    cores = lease.cores()
    pinned = f"; cores {','.join(map(str, sorted(cores)))}" if cores is not None else ""
    job_rows.add_status_event(
        job_id,
        attempt=claim.attempt,
        message=f"holds device(s) {held} of its worker ({', '.join(lease.device_ids())}{pinned})",
    )
    with tempfile.TemporaryDirectory(prefix=f"tunecost-{job_id}-") as tmp, _Watch(claim) as watch:
        work = Path(tmp)
        try:
            launch = launch_of(claim, dataset_path=_copy_dataset(claim.dataset_url, work))
        except JobInputError as exc:
            job_rows.finish(
                job_id, attempt=claim.attempt, status=JobStatus.FAILED, detail=None, error=str(exc)
            )
            return f"failed: {exc}"
        throttle = runner.Throttle(_event_writer(claim), interval_s=PROGRESS_EVERY_S)
        with _pinned(cores):
            outcome = runner.run_job(
                launch,
                devices=lease.device_ids(),
                out_dir=work / "artifact",
                on_event=throttle,
                should_cancel=watch.should_cancel,
                grace_s=STOP_GRACE_S,
                on_start=_record_pid(claim),
            )
        try:
            throttle.flush()
        except OperationalError:  # the run's last progress goes with its end (job_rows.finish)
            log.warning("job %s: its last progress event was not written", job_id)
        # Which of the worker's devices the job held: the proof that jobs never share one.
        if outcome.actuals is not None:
            update = {"worker_devices": list(lease.indexes)}
            outcome.actuals = outcome.actuals.model_copy(update=update)
        if watch.lost:
            return f"abandoned: job {job_id} was taken over by another attempt"
        if watch.cancelled and outcome.status == "failed" and outcome.error_kind == "child_died":
            outcome.status = "cancelled"  # killed after the grace period: still a cancel
        _finish(claim, outcome, work / "artifact")
    return f"{outcome.status}: job {job_id}"
