"""Which ending a multi-rank job reports: rank 0's result, else the failing rank's own error."""

from __future__ import annotations

import multiprocessing
from typing import Any

from app.jobs.actuals import JobActuals
from worker.training.launch import RankRelay
from worker.training.messages import (
    ErrorMessage,
    PhaseEvent,
    PipeMessage,
    ProgressEvent,
    ResultMessage,
    decode,
    encode,
)


class _Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, obj: Any) -> None:
        self.sent.append(obj)

    def close(self) -> None:
        pass


def _relay(*by_rank: list[PipeMessage]) -> tuple[RankRelay, _Sink]:
    """A relay that has read each rank's messages from a real pipe, to the end."""
    pipes = [multiprocessing.Pipe(duplex=False) for _ in by_rank]
    sink = _Sink()
    relay = RankRelay([r for r, _ in pipes], sink)
    for (_, writer), messages in zip(pipes, by_rank, strict=True):
        for message in messages:
            writer.send(encode(message))
        writer.close()
    relay.run()
    return relay, sink


def _error(rank: int, message: str, kind: str = "internal") -> ErrorMessage:
    return ErrorMessage(kind=kind, message=f"rank {rank}: {message}", rank=rank)


def test_rank_zeros_events_pass_and_its_result_ends_the_job() -> None:
    phase = PhaseEvent(phase="training", info={"total_steps": 1})
    progress = ProgressEvent(
        step=1,
        total_steps=1,
        loss=2.5,
        tokens=64,
        tokens_per_s=32.0,
        elapsed_s=2.0,
        accrued_cost_usd=0.001,
    )
    actuals = JobActuals(
        wall_s=3.0,
        gpu_hours=0.001,
        num_gpus=2,
        price_per_gpu_hour=1.0,
        cost_usd=0.001,
        steps=1,
        tokens=64,
    )
    result = ResultMessage(actuals=actuals)
    relay, sink = _relay([phase, progress, result], [])
    assert [decode(m) for m in sink.sent] == [phase, progress]
    assert relay.ending(None, None) == result


def test_a_message_outside_the_union_is_an_internal_error_not_a_crash() -> None:
    sink = _Sink()
    pipes = multiprocessing.Pipe(duplex=False)
    relay = RankRelay([pipes[0]], sink)
    pipes[1].send({"type": "progress", "step": "three"})
    pipes[1].close()
    relay.run()
    ending = relay.ending(None, None)
    assert isinstance(ending, ErrorMessage) and ending.kind == "internal"
    assert "not valid" in ending.message and sink.sent == []


def test_the_failed_rank_speaks_for_the_job_not_the_peer_it_left_waiting() -> None:
    # rank 1 ran out of memory; rank 0 then failed in a collective with its dead peer
    relay, _ = _relay(
        [_error(0, "RuntimeError: Connection closed by peer")],
        [_error(1, "out of memory at step 3", kind="out_of_memory")],
    )
    ending = relay.ending(1, "exitcode 1")
    assert isinstance(ending, ErrorMessage)
    assert ending.kind == "out_of_memory" and ending.message.startswith("rank 1:")


def test_a_rank_that_died_without_a_word_is_named_with_its_signal() -> None:
    relay, _ = _relay([], [])
    ending = relay.ending(1, "Signal 9 (SIGKILL) received by PID 4242")
    assert ending == ErrorMessage(
        kind="rank_died", message="rank 1 died: Signal 9 (SIGKILL) received by PID 4242", rank=1
    )
