"""One node of a job across nodes, from its worker: join the gang, start together, end together.

The worker holds the devices of one node (worker/tasks.py), takes a seat of the job and waits
for the other seats (app/jobs/gang.py). Node 0 then claims the job and publishes where its agent
hosts torch's rendezvous store; every node starts its launcher with its place in the job
(worker/training/launch.py). While the ranks run, each node beats its seat and watches the
others': a peer whose seat goes stale (its worker died) or that failed makes it stop its own
ranks at once. Node 0 meters and stores the job, as a one-node job's worker does; when its
ranks fail it first waits for the other nodes to end, then retries the job if a node was lost
or fails it with the failed nodes' own errors, each named.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import session_scope
from app.jobs import gang
from app.jobs.lifecycle import ACTIVE
from app.models import Job, JobStatus, SeatState
from worker import devices, job_rows
from worker.job_rows import Claim, Skip
from worker.jobs import (
    PROGRESS_EVERY_S,
    STOP_GRACE_S,
    JobInputError,
    Watch,
    copy_dataset,
    event_writer,
    finish_attempt,
    launch_of,
    pinned,
    record_pid,
)
from worker.training import runner

log = logging.getLogger(__name__)

POLL_S = 1.0  # a gathering node looks at its gang this often
# A gathering node gives way to an older gathering job of its queue only after this long, so
# the messages already on their way to other workers can fill its gang first.
YIELD_AFTER_S = 5.0
PASS_ON_PAUSE_S = 1.0  # before sending on a message this worker cannot take (no hot loop)
SETTLE_EXTRA_S = 5.0  # node 0 waits for the others to end: their stale limit, and this


@dataclass(frozen=True)
class Started:
    """The attempt this node runs, and where its ranks meet the others'."""

    claim: Claim
    endpoint: str


def pass_on(job_id: str) -> bool:
    """Send the message of a gathering job across nodes on to another worker; False if the
    job is not one."""
    time.sleep(PASS_ON_PAUSE_S)
    with session_scope() as session:
        return gang.pass_on(session, job_id=job_id)


def run_node(job_id: str, *, hostname: str, lease: devices.DeviceLease) -> str:
    """Join job `job_id`'s gang with this worker's `lease`, run its node, end it; a summary."""
    settings = get_settings()
    with session_scope() as session:
        seat = gang.join(session, job_id=job_id, worker=hostname)
    if isinstance(seat, str):
        return f"skipped: {seat}"
    try:
        started = _gather(seat, settings)
    except Exception:  # a bug or the database gone for good: give the seat back if it can
        log.exception("job %s: gathering failed", job_id)
        with contextlib.suppress(Exception), session_scope() as session:
            gang.leave(session, seat, reason="its worker failed while gathering")
        raise
    if isinstance(started, str):
        return started
    try:
        return _run(seat, started, lease, settings)
    except Exception as exc:  # a bug or an unforeseen failure: end this node, keep the worker
        log.exception("job %s: node %d crashed", job_id, seat.node_index)
        error = f"internal error in the worker: {type(exc).__name__}: {exc}"
        claim = started.claim
        with session_scope() as session:
            gang.end_node(session, seat, attempt=claim.attempt, error=error)
        if seat.is_host:
            job_rows.finish(
                job_id,
                attempt=claim.attempt,
                status=JobStatus.FAILED,
                detail=None,
                error=f"node 0 ({seat.worker}): {error}",
            )
        return f"failed: {error}"


def rendezvous_endpoint(settings: Settings, *, ports: int) -> str:
    """host:port this worker's agent will host the job's rendezvous store at.

    The port is free when picked; another process could take it before the agent binds it, in
    which case the rendezvous fails and the job is retried.
    """
    address = settings.worker_address or socket.gethostname()
    first = settings.worker_rendezvous_port
    candidates = [0] if first is None else list(range(first, min(first + ports, 65536)))
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return f"{address}:{probe.getsockname()[1]}"
    raise RuntimeError(
        f"no free rendezvous port among {candidates} (TUNECOST_WORKER_RENDEZVOUS_PORT)"
    )


def _gather(seat: gang.Seat, settings: Settings) -> Started | str:
    """Wait until the gang is complete and started; why not, when this node leaves instead."""
    begun = time.monotonic()
    endpoint: str | None = None
    while True:
        with session_scope() as session:
            view = gang.look(session, seat, stale_s=settings.heartbeat_stale_s)
        if view is None:
            return f"left: job {seat.job_id} ended or gave this node's seat away while gathering"
        mine = view.seat(seat.node_index)
        if view.status in ACTIVE:
            host = view.seat(gang.HOST)
            if mine is None or mine.attempt is None or host is None or host.endpoint is None:
                return f"skipped: job {seat.job_id} runs without this node"
            claimed = job_rows.running_claim(seat.job_id, attempt=mine.attempt)
            if isinstance(claimed, Skip):
                return f"skipped: {claimed.reason}"
            return Started(claim=claimed, endpoint=host.endpoint)
        if view.status != JobStatus.QUEUED:
            return f"left: job {seat.job_id} is {view.status}"
        if seat.is_host and view.complete:
            endpoint = endpoint or rendezvous_endpoint(settings, ports=len(view.seats))
            claimed = job_rows.claim(
                seat.job_id, hostname=seat.worker, before=_starts(seat, endpoint)
            )
            if isinstance(claimed, Claim):
                return Started(claim=claimed, endpoint=endpoint)
            log.info("job %s: not started yet: %s", seat.job_id, claimed.reason)
        waited = time.monotonic() - begun
        reason = None
        if waited >= gang.GATHER_S:
            reason = f"the gang was not complete after {gang.GATHER_S:g} s"
        elif waited >= YIELD_AFTER_S and not view.complete:
            with session_scope() as session:
                older = gang.yield_to(session, seat)
            if older is not None:
                reason = f"job {older}, older, gathers its nodes on this queue first"
        if reason is not None:
            with session_scope() as session:
                left = gang.leave(session, seat, reason=reason)
            if left:
                return f"left: {reason}"
        time.sleep(POLL_S)


def _starts(seat: gang.Seat, endpoint: str) -> job_rows.BeforeClaim:
    """The check node 0 makes under the job's lock as it claims it: the gang is complete."""

    def start(session: Session, job: Job) -> str | None:
        return gang.start(session, job, worker=seat.worker, endpoint=endpoint)

    return start


class GangWatch(Watch):
    """Beats this node's seat (and, on node 0, the job) and watches the job and the other nodes,
    from a thread; `should_cancel` says when this node's ranks must stop."""

    THREAD_NAME = "tunecost-gang-beat"

    def __init__(self, seat: gang.Seat, claim: Claim, settings: Settings) -> None:
        self.seat = seat
        self.stale_s = settings.heartbeat_stale_s
        self.trouble: str | None = None  # another node failed or was lost
        super().__init__(claim)  # `lost` also when this node's seat is gone

    def should_cancel(self) -> bool:
        """True once a cancel was requested, the job was taken over or a peer node is gone."""
        return self.cancelled or self.lost or self.trouble is not None

    def _check(self) -> bool:
        """Node 0 beats the job too; every node keeps watching to the end (False)."""
        job_id, attempt = self.claim.job_id, self.claim.attempt
        if self.seat.is_host:
            super()._check()
        with session_scope() as session:
            view = gang.look(session, self.seat, stale_s=self.stale_s)
        if view is None or view.attempts != attempt or view.status not in ACTIVE:
            self.lost = True
            return False
        if view.status == JobStatus.CANCEL_REQUESTED:
            self.cancelled = True
        for peer in view.seats:
            if peer.node_index == self.seat.node_index or self.trouble is not None:
                continue
            if peer.state == SeatState.FAILED:
                self.trouble = f"{peer.describe()} failed: {peer.error}"
            elif peer.state == SeatState.RUNNING and not peer.fresh:
                self.trouble = f"{peer.describe()} stopped beating"
            if self.trouble is not None:
                log.warning("job %s: %s; stopping this node's ranks", job_id, self.trouble)
        return False


def _run(seat: gang.Seat, started: Started, lease: devices.DeviceLease, settings: Settings) -> str:
    claim = started.claim
    job_id, attempt = claim.job_id, claim.attempt
    held = ",".join(str(i) for i in lease.indexes)
    job_rows.add_status_event(
        job_id,
        attempt=attempt,
        message=f"node {seat.node_index} of {seat.nodes} on {seat.worker} holds device(s) {held} "
        f"({', '.join(lease.device_ids())}); rendezvous at {started.endpoint}",
    )
    with (
        tempfile.TemporaryDirectory(prefix=f"tunecost-{job_id}-") as tmp,
        GangWatch(seat, claim, settings) as watch,
    ):
        work = Path(tmp)
        try:
            launch = launch_of(
                claim,
                dataset_path=copy_dataset(claim.dataset_url, work),
                node_index=seat.node_index,
                rendezvous=started.endpoint,
            )
        except JobInputError as exc:
            outcome = runner.RunOutcome("failed", None, error_kind="input", error=str(exc))
        else:
            throttle = runner.Throttle(event_writer(claim), interval_s=PROGRESS_EVERY_S)
            with pinned(lease.cores()):
                outcome = runner.run_job(
                    launch,
                    devices=lease.device_ids(),
                    out_dir=work / "artifact",
                    on_event=throttle if seat.is_host else None,
                    should_cancel=watch.should_cancel,
                    grace_s=STOP_GRACE_S,
                    on_start=record_pid(claim),
                )
            throttle.flush()
        if watch.cancelled and outcome.status == "failed":
            outcome.status = (
                "cancelled"  # stopped for the cancel: what broke on the way is its doing
            )
        # Stopped because another node failed or was lost: this node failed with it.
        stopped = watch.trouble is not None and not watch.cancelled
        failed = outcome.status == "failed" or (stopped and outcome.status != "succeeded")
        own_error = (
            f"{outcome.error_kind}: {outcome.error}"
            if outcome.status == "failed"
            else watch.trouble or None
        )
        with session_scope() as session:
            gang.end_node(session, seat, attempt=attempt, error=own_error if failed else None)
        if not seat.is_host:
            return f"{'failed' if failed else outcome.status}: node {seat.node_index} of {job_id}"
        if watch.lost:
            return f"abandoned: job {job_id} was taken over by another attempt"
        if outcome.actuals is not None:
            update = {"worker_devices": list(lease.indexes)}
            outcome.actuals = outcome.actuals.model_copy(update=update)
        if not failed:
            finish_attempt(claim, outcome, work / "artifact")
            return f"{outcome.status}: job {job_id} on {seat.nodes} nodes"
        return _end_failed(seat, claim, outcome, own_error, work / "artifact", settings)


def _end_failed(
    seat: gang.Seat,
    claim: Claim,
    outcome: runner.RunOutcome,
    own_error: str | None,
    artifact: Path,
    settings: Settings,
) -> str:
    """Node 0's ranks failed: wait for the other nodes to end, then retry the job if one was
    lost, else fail it with every failed node's error, each named."""
    peers = _settle(seat, claim.attempt, settings)
    lost = [p for p in peers if p.state not in (SeatState.DONE, SeatState.FAILED)]
    if lost:
        names = ", ".join(p.describe() for p in lost)
        stale = settings.heartbeat_stale_s
        reason = f"{names} was lost: its worker stopped beating (stale after {stale:g} s)"
        job_rows.lose(claim.job_id, attempt=claim.attempt, reason=reason)
        return f"lost a node: {reason}"
    errors = [f"{p.describe()} failed: {p.error}" for p in peers if p.state == SeatState.FAILED]
    errors.append(f"node 0 ({seat.worker}) failed: {own_error}")
    outcome.status = "failed"
    outcome.error_kind = "node_failed"
    outcome.error = "; ".join(errors)
    finish_attempt(claim, outcome, artifact)
    return f"failed: job {claim.job_id}: {outcome.error}"


def _settle(seat: gang.Seat, attempt: int, settings: Settings) -> list[gang.SeatView]:
    """The other nodes' seats once each has ended or gone stale (at most their stale limit)."""
    deadline = time.monotonic() + settings.heartbeat_stale_s + SETTLE_EXTRA_S
    peers: list[gang.SeatView] = []
    while True:
        with session_scope() as session:
            view = gang.look(session, seat, stale_s=settings.heartbeat_stale_s)
        if view is None or view.attempts != attempt:
            return peers
        peers = [p for p in view.seats if p.node_index != seat.node_index]
        missing = seat.nodes - 1 - len(peers)
        settled = all(p.state in (SeatState.DONE, SeatState.FAILED) or not p.fresh for p in peers)
        if (settled and not missing) or time.monotonic() >= deadline:
            return peers
        time.sleep(POLL_S)
