"""One attempt of a job on this worker: claim it, train it in a child process, meter and store it.

The `tunecost.run_job` task (worker/tasks.py) first takes the job's devices of its worker
(worker/devices.py; the job stays queued while they are held by other jobs), then claims the job
here and trains on those devices (a job across nodes runs one node here: worker/gang.py).
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

from sqlalchemy.exc import OperationalError

from app.config import get_settings
from app.evals.points import EvalPoint
from app.jobs.artifacts import artifact_url
from app.jobs.metered import Artifact, Metered
from app.kit import redact
from app.kit.storage import open_file
from app.models import JobStatus
from worker import devices, job_rows
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


class JobInputError(Exception):
    """Something the job needs is missing (its dataset file, say): the job fails with this."""


def copy_dataset(url: str | None, dest_dir: Path) -> Path:
    """Copy the job's dataset from storage into `dest_dir`; its local path."""
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


def launch_of(
    claim: Claim, *, dataset_path: Path, node_index: int = 0, rendezvous: str | None = None
) -> Launch:
    """The claimed job's spec and this attempt's run context, as the training child takes them
    (on node `node_index` of a job across nodes, whose ranks meet at `rendezvous`)."""
    settings = get_settings()
    return Launch(
        spec=claim.spec,
        run=RunContext(
            job_id=claim.job_id,
            dataset_path=str(dataset_path),
            dataset_columns=claim.dataset_columns,
            model_roots=[str(p) for p in settings.resolved_model_roots()],
            max_dataset_bytes=settings.dataset_bytes_cap,  # what the API let the upload hold
            started_at=claim.started_at_epoch,
            billed_usd=claim.billed_usd,  # the budget is the job's, not the attempt's
            node_index=node_index,
            rendezvous=rendezvous,
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


def event_writer(claim: Claim) -> runner.EventCallback:
    """The callback that stores the child's phases, progress and eval points on the job."""

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


class Watch:
    """Heartbeat and cancel poll in one query every few seconds, from a thread.

    It beats for the whole attempt (copying the dataset, training, uploading the artifact), so
    a slow upload is never taken for a dead worker. `should_cancel` (polled by the runner) only
    reads what the thread saw: a cancel request, or that another attempt owns the job now.
    """

    THREAD_NAME = "tunecost-job-beat"

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.every = min(get_settings().heartbeat_interval_s, MAX_CHECK_S)
        self.lost = False
        self.cancelled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)

    def __enter__(self) -> Self:
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
                if self._check():
                    return
            except Exception:  # the database is briefly away: keep going, try again
                log.warning("heartbeat of job %s failed", self.claim.job_id, exc_info=True)

    def _check(self) -> bool:
        """One beat and look; True when there is nothing more to watch."""
        status = job_rows.beat(self.claim.job_id, attempt=self.claim.attempt)
        if status is None:
            self.lost = True  # another attempt owns the job now; stop ours
            log.warning("job %s is no longer ours; stopping its child", self.claim.job_id)
            return True
        if status == JobStatus.CANCEL_REQUESTED:
            self.cancelled = True
        return False


def record_pid(claim: Claim) -> Callable[[runner.TrainingChild], None]:
    """The callback that records the training process's pid as a status event."""

    def on_start(child: runner.TrainingChild) -> None:
        job_rows.add_status_event(
            claim.job_id,
            attempt=claim.attempt,
            message=f"training process started (pid {child.pid})",
        )

    return on_start


def finish_attempt(claim: Claim, outcome: runner.RunOutcome, local_artifact: Path) -> None:
    """End the claimed attempt as its outcome says, uploading the artifact it saved."""
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


def claim_and_run(job_id: str, *, hostname: str, lease: devices.DeviceLease) -> str:
    """Claim job `job_id` for `hostname` and train it on `lease`; a one-line summary."""
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
def pinned(cores: set[int] | None) -> Iterator[None]:
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
    on_cores = f"; cores {','.join(map(str, sorted(cores)))}" if cores is not None else ""
    job_rows.add_status_event(
        job_id,
        attempt=claim.attempt,
        message=f"holds device(s) {held} of its worker ({', '.join(lease.device_ids())}{on_cores})",
    )
    with tempfile.TemporaryDirectory(prefix=f"tunecost-{job_id}-") as tmp, Watch(claim) as watch:
        work = Path(tmp)
        try:
            launch = launch_of(claim, dataset_path=copy_dataset(claim.dataset_url, work))
        except JobInputError as exc:
            job_rows.finish(
                job_id, attempt=claim.attempt, status=JobStatus.FAILED, detail=None, error=str(exc)
            )
            return f"failed: {exc}"
        throttle = runner.Throttle(event_writer(claim), interval_s=PROGRESS_EVERY_S)
        with pinned(cores):
            outcome = runner.run_job(
                launch,
                devices=lease.device_ids(),
                out_dir=work / "artifact",
                on_event=throttle,
                should_cancel=watch.should_cancel,
                grace_s=STOP_GRACE_S,
                on_start=record_pid(claim),
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
        finish_attempt(claim, outcome, work / "artifact")
    return f"{outcome.status}: job {job_id}"
