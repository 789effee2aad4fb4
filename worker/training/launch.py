"""A job on several devices: torch's elastic launcher starts one rank per device and watches them.

The runner's child (worker/training/runner.py) becomes the launcher: it calls
`torch.distributed.launcher.api.elastic_launch` (the engine behind `torchrun --standalone`) with
one node, one rank per device, a c10d rendezvous on a free local port and no restarts. Each rank
runs `rank_main`: it joins the process group (gloo on CPU, NCCL on GPUs), trains its shard, and
writes to its own pipe: rank 0 its phases, progress and the job's actuals, every rank its error
if it fails. The launcher relays rank 0's events to the parent and ends with one `result` or
`error`, as a single-device child does.

Stopping: SIGTERM to the launcher (cancel, budget) makes torch's agent SIGTERM every rank; the
ranks agree at their next step to stop (distributed.py), rank 0 saves and reports, and after
SHUTDOWN_S the agent SIGKILLs what is left. A rank that crashes fails the job with its own
error: the agent sees it exit and ends the others; a rank stuck in a collective with a dead peer
fails at the process group's timeout at worst. Ranks die with the launcher (PDEATHSIG), and the
parent kills the whole process tree when its grace period ends, so no process outlives the job.
Torch is imported here only inside the functions: the worker process that imports the runner
must not load it (the parent stays small and CUDA-free).

A job across nodes (spec.nodes > 1) runs one such launcher per node, each started by its own
worker: torch's static rendezvous puts node k's ranks at k x gpus_per_node + local rank, on a
TCPStore that node 0's agent hosts at `run.rendezvous` (app/jobs/gang.py publishes it). Rank 0
(on node 0) reports for the job; the other nodes' launchers end with `done`. A node whose peer
dies sees its collectives fail (the peer's sockets close) and ends like a failed rank.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection as MpConnection
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.training.child import Connection, EventSender, die_with_parent
from worker.training.messages import (
    DoneMessage,
    ErrorMessage,
    PhaseEvent,
    PipeMessage,
    ResultMessage,
    decode,
    encode,
)

SHUTDOWN_S = 3  # agent: SIGTERM to SIGKILL for ranks, inside the parent's own grace (5 s)
MONITOR_S = 0.1  # how often the agent looks at its ranks (torchrun's default is 0.1 s too)
# Local ranks meet as soon as they have imported torch; the nodes of a job across nodes start
# their launchers within seconds of each other, once their gang is complete (app/jobs/gang.py).
RENDEZVOUS_TIMEOUT_S = 300


class RankRelay(threading.Thread):
    """Reads every rank's pipe: forwards rank 0's phases and progress, keeps the endings."""

    def __init__(
        self, readers: list[MpConnection], conn: Connection, *, reports: bool = True
    ) -> None:
        super().__init__(name="tunecost-ranks-relay", daemon=True)
        self._readers = readers
        self._conn = conn
        self._reports = reports  # holds rank 0, which reports the job (node 0 of several)
        self.result: ResultMessage | None = None
        self.errors: dict[int, ErrorMessage] = {}  # the first error of each rank
        self.error_order: list[int] = []

    def run(self) -> None:
        live: list[Any] = list(self._readers)
        while live:
            for ready in wait(live):
                reader: Any = ready
                try:
                    raw = reader.recv()
                except (EOFError, OSError):  # every copy of that rank's write end is closed
                    live.remove(ready)
                    continue
                try:
                    message = decode(raw)
                except ValidationError as exc:  # a rank and this launcher disagree: a bug
                    message = ErrorMessage(
                        kind="internal", message=f"a rank's message is not valid: {exc}"
                    )
                if isinstance(message, ResultMessage):
                    self.result = message
                elif isinstance(message, ErrorMessage):
                    rank = -1 if message.rank is None else message.rank
                    if rank not in self.errors:
                        self.errors[rank] = message
                        self.error_order.append(rank)
                elif not isinstance(message, DoneMessage):
                    # OSError: the parent is gone; the ranks die with the launcher.
                    with contextlib.suppress(OSError):
                        self._conn.send(encode(message))

    def ending(self, failed_rank: int | None, failure: str | None) -> PipeMessage:
        """The one final event: rank 0's result, else the failing rank's own error."""
        if self.result is not None:
            return self.result
        if failed_rank is not None and failed_rank in self.errors:
            return self.errors[failed_rank]
        if failed_rank is not None:  # it died without a word: a signal, os._exit, the OOM killer
            return ErrorMessage(
                kind="rank_died", message=f"rank {failed_rank} died: {failure}", rank=failed_rank
            )
        if self.error_order:
            return self.errors[self.error_order[0]]
        if not self._reports:
            return DoneMessage()  # another node's rank 0 reports for the job
        return ErrorMessage(kind="internal", message="the ranks ended without a result")


def launcher_main(
    launch_json: dict[str, Any],
    out_dir: str,
    conn: Connection,
    environment: dict[str, str] | None = None,
) -> None:
    """Entry point of the runner's child for a job on several devices: launch and relay.

    `launch_json` is a `Launch` dumped to JSON (each rank validates it again).
    """
    os.environ.update(environment or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in a terminal is the parent's
    # A stop before torch's agent runs its ranks: leave without starting them. Once they run,
    # the agent's own handler turns SIGTERM into a shutdown of every rank.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    die_with_parent()
    nodes = int(launch_json["spec"].get("nodes", 1))
    world = int(launch_json["spec"]["num_gpus"]) // nodes  # this node's ranks
    node_index = int(launch_json["run"].get("node_index", 0))
    _may_start_ranks()
    ctx = multiprocessing.get_context("spawn")
    pipes = [ctx.Pipe(duplex=False) for _ in range(world)]
    writers = [w for _, w in pipes]
    relay = RankRelay([r for r, _ in pipes], conn, reports=node_index == 0)
    relay.start()
    failed_rank: int | None = None
    failure: str | None = None
    try:
        failed_rank, failure = _launch(launch_json, out_dir, writers, world)
    except Exception as exc:  # the launcher itself failed (rendezvous, spawn): say so
        relay.errors.setdefault(
            -1,
            ErrorMessage(
                kind="launch_failed",
                message=f"starting {world} ranks failed: {type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            ),
        )
        relay.error_order.append(-1)
    finally:
        for writer in writers:
            writer.close()  # the ranks have ended: the relay reads what is left, then EOF
        relay.join()
    final = relay.ending(failed_rank, failure)
    try:
        conn.send(encode(final))
    finally:
        conn.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _may_start_ranks() -> None:
    """Let the standard library's spawn (torch's launcher uses it) start the ranks from here.

    This process was started by billiard's spawn, from a Celery pool process: it inherits that
    process's daemon flag, which the standard library reads as "no children allowed", and
    billiard's AuthenticationString, which it refuses to pickle. Neither applies: billiard lets
    this process have children by design, and the ranks die with it (PDEATHSIG) or are ended
    by torch's agent.
    """
    current: Any = multiprocessing.current_process()
    standard: Any = multiprocessing.process
    current._config["daemon"] = False
    current._config["authkey"] = standard.AuthenticationString(os.urandom(32))


def _launch(
    launch_json: dict[str, Any], out_dir: str, writers: list[MpConnection], world: int
) -> tuple[int | None, str | None]:
    """Run the ranks to their end; (first failed rank, its failure) when one failed."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    run = launch_json["run"]
    nodes = int(launch_json["spec"].get("nodes", 1))
    if nodes > 1:
        # Node k's ranks are k x world + local rank: rank 0, which reports, is node 0's; node
        # 0's agent hosts the store the others connect to.
        rendezvous: dict[str, Any] = {
            "rdzv_backend": "static",
            "rdzv_endpoint": run["rendezvous"],
            "rdzv_configs": {"rank": int(run["node_index"]), "timeout": RENDEZVOUS_TIMEOUT_S},
        }
    else:
        rendezvous = {
            "rdzv_backend": "c10d",
            "rdzv_endpoint": "127.0.0.1:0",  # a free port: jobs on one machine never collide
            "rdzv_configs": {"timeout": RENDEZVOUS_TIMEOUT_S},
        }
    config = LaunchConfig(
        min_nodes=nodes,
        max_nodes=nodes,
        nproc_per_node=world,
        run_id=str(run["job_id"]),
        **rendezvous,
        max_restarts=0,  # a failed rank fails the job; a retry is the queue's decision
        monitor_interval=MONITOR_S,
        start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=os.devnull),  # ranks report through their pipes
        shutdown_timeout=SHUTDOWN_S,
    )
    try:
        elastic_launch(config, rank_main)(launch_json, out_dir, writers)
    except ChildFailedError as exc:
        rank, process = exc.get_first_failure()
        return rank, process.message
    except SignalException:
        pass  # stopped by the parent: the ranks were told and the agent has ended them
    return None, None


def rank_main(launch_json: dict[str, Any], out_dir: str, writers: list[MpConnection]) -> None:
    """Entry point of one rank: join the group, train its shard, report; exit 1 on failure."""
    rank = int(os.environ["RANK"])
    local = int(os.environ["LOCAL_RANK"])
    conn = writers[local]
    for other, writer in enumerate(writers):
        if other != local:
            writer.close()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Without the launcher nobody listens and the peers may be gone: end at once.
    die_with_parent(signal.SIGKILL)
    sender = EventSender(conn, on_parent_gone=stop.set) if rank == 0 else None
    final = _train_rank(launch_json, out_dir, rank, stop, sender)
    if sender is not None:
        sender.close(final)
    else:
        if isinstance(final, ErrorMessage):
            conn.send(encode(final))
        conn.close()
    if isinstance(final, ErrorMessage):
        sys.exit(1)  # the agent sees a failed rank and ends the others


def _train_rank(
    launch_json: dict[str, Any],
    out_dir: str,
    rank: int,
    stop: threading.Event,
    sender: EventSender | None,
) -> PipeMessage:
    try:
        from worker.training.distributed import job_strategy, join_group, leave_group
        from worker.training.errors import TrainingError
        from worker.training.job import train_rank
        from worker.training.spec import parse_launch

        try:
            launch = parse_launch(launch_json)
            ranks = join_group(launch, job_strategy(launch.spec))
            actuals = train_rank(
                launch,
                out_dir=Path(out_dir),
                on_progress=sender.progress if sender is not None else (lambda e: None),
                stop_requested=stop.is_set,
                on_phase=(
                    (lambda name, info: sender.send(PhaseEvent(phase=name, info=info)))
                    if sender is not None
                    else None
                ),
                on_eval=sender.send if sender is not None else None,
                ranks=ranks,
            )
            # Only after success: a failing rank exits without waiting on peers that may hang.
            leave_group()
            if actuals is None:  # ranks other than 0: rank 0 reports for the job
                return DoneMessage()
            return ResultMessage(actuals=actuals)
        except TrainingError as exc:
            return ErrorMessage(kind=exc.kind, message=f"rank {rank}: {exc}", rank=rank)
    except Exception as exc:  # a bug or an unforeseen library error: report it, never hang
        oom = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
        return ErrorMessage(
            kind="out_of_memory" if oom else "internal",
            message=f"rank {rank}: {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            rank=rank,
        )
