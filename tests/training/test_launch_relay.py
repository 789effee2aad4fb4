"""Which ending a multi-rank job reports: rank 0's result, else the failing rank's own error."""

from __future__ import annotations

import multiprocessing
from typing import Any

from worker.training.launch import RankRelay


class _Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, obj: Any) -> None:
        self.sent.append(obj)

    def close(self) -> None:
        pass


def _relay(*by_rank: list[dict[str, Any]]) -> tuple[RankRelay, _Sink]:
    """A relay that has read each rank's messages from a real pipe, to the end."""
    pipes = [multiprocessing.Pipe(duplex=False) for _ in by_rank]
    sink = _Sink()
    relay = RankRelay([r for r, _ in pipes], sink)
    for (_, writer), messages in zip(pipes, by_rank, strict=True):
        for message in messages:
            writer.send(message)
        writer.close()
    relay.run()
    return relay, sink


def _error(rank: int, message: str, kind: str = "internal") -> dict[str, Any]:
    return {"type": "error", "kind": kind, "message": f"rank {rank}: {message}", "rank": rank}


def test_rank_zeros_events_pass_and_its_result_ends_the_job() -> None:
    progress = {"type": "progress", "step": 1}
    result = {"type": "result", "actuals": {"steps": 1}}
    relay, sink = _relay([{"type": "phase", "phase": "training"}, progress, result], [])
    assert sink.sent == [{"type": "phase", "phase": "training"}, progress]
    assert relay.ending(None, None) == result


def test_the_failed_rank_speaks_for_the_job_not_the_peer_it_left_waiting() -> None:
    # rank 1 ran out of memory; rank 0 then failed in a collective with its dead peer
    relay, _ = _relay(
        [_error(0, "RuntimeError: Connection closed by peer")],
        [_error(1, "out of memory at step 3", kind="out_of_memory")],
    )
    ending = relay.ending(1, "exitcode 1")
    assert ending["kind"] == "out_of_memory" and ending["message"].startswith("rank 1:")


def test_a_rank_that_died_without_a_word_is_named_with_its_signal() -> None:
    relay, _ = _relay([], [])
    ending = relay.ending(1, "Signal 9 (SIGKILL) received by PID 4242")
    assert ending["kind"] == "rank_died"
    assert ending["message"] == "rank 1 died: Signal 9 (SIGKILL) received by PID 4242"
