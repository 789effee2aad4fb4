"""Jobs on two CPU "devices": real gloo ranks started by torch's elastic launcher (tiny model).

The 1-rank baseline trains in this process with gradient_accumulation_steps x 2, so both runs
take the same global batch of sequences per step. The tolerance on the losses: the two runs add
the same fp32 gradients in a different order (one process accumulating, or two ranks each
summing half and gloo adding the halves), and matmuls may block differently with one thread per
rank. Each such difference is a few units of fp32's 1.2e-7 relative epsilon; three AdamW steps
at lr 1e-3 move each weight by at most ~3e-3, so the losses, about 5.5, agree to far better
than LOSS_ATOL = 1e-4 (measured: under 1e-5). A wrong global batch (a rank training on the
other's sequences, a loss averaged per rank instead of per token) moves them by 1e-3 or more.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from safetensors.torch import load_file

from worker.training.job import run_training
from worker.training.messages import PipeMessage, ProgressEvent
from worker.training.runner import TrainingChild, run_job
from worker.training.spec import Launch

pytestmark = pytest.mark.slow
TWO_CPUS = ["cpu:0", "cpu:1"]
LOSS_ATOL = 1e-4  # see the module docstring
WEIGHT_ATOL = 1e-5  # the same argument, on weights that moved by at most ~3e-3
CANCEL_DEADLINE_S = 10.0  # the requirement: cancel ends every rank within 10 s
LONG_RUN_STEPS = 1_000_000
EXIT_WAIT_S = 5.0  # see _Ranks.left_running
BUDGET_SECONDS = 20.0  # wall time to the budget cap of the budget test


def _spec(job_spec: dict[str, Any], method: str, strategy: str, **training: Any) -> dict[str, Any]:
    return {
        **job_spec,
        "method": method,
        "strategy": strategy,
        "training": {"micro_batch_size": 2, "precision": "fp32", **training},
        # Dropout draws from each process's RNG: masks would differ between 1 and 2 ranks.
        "lora": {**job_spec["lora"], "dropout": 0.0},
        "num_gpus": 2,
    }


class _Ranks:
    """Collects the job's process tree while it runs (the launcher and its ranks)."""

    def __init__(self) -> None:
        self.child: TrainingChild | None = None
        self.seen: dict[int, psutil.Process] = {}

    def on_start(self, child: TrainingChild) -> None:
        self.child = child

    def watch(self, message: PipeMessage) -> None:
        """An event callback: note the processes running now."""
        self.look()

    def look(self) -> list[psutil.Process]:
        assert self.child is not None and self.child.pid is not None
        try:
            tree = [psutil.Process(self.child.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for process in tree:
            self.seen.setdefault(process.pid, process)
        return tree

    def rank(self, rank: int) -> psutil.Process | None:
        """Rank `rank`: the launcher's spawned children in start order (torch starts local
        rank 0 first); its resource tracker is a child too, but not a spawned one."""
        assert self.child is not None and self.child.pid is not None
        self.look()
        spawned = []
        for process in psutil.Process(self.child.pid).children():
            try:
                if "spawn_main" in " ".join(process.cmdline()):
                    spawned.append(process)
            except psutil.Error:
                continue
        spawned.sort(key=lambda p: (p.create_time(), p.pid))
        return spawned[rank] if rank < len(spawned) else None

    def left_running(self) -> list[psutil.Process]:
        """What is still running of the tree once the job has ended.

        The launcher's resource tracker (a helper of Python's spawn) exits when it sees its
        last client gone, a moment after the ranks: allow it EXIT_WAIT_S to notice.
        """
        alive = [p for p in self.seen.values() if p.is_running()]
        _gone, still = psutil.wait_procs(alive, timeout=EXIT_WAIT_S)
        return [p for p in still if _runs(p)]


def _runs(process: psutil.Process) -> bool:
    """True while `process` runs (a zombie has ended: only its exit status waits to be read)."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(("method", "strategy"), [("full", "fsdp_zero3"), ("lora", "fsdp_zero3")])
def test_two_ranks_reach_the_losses_of_one(
    method: str,
    strategy: str,
    job_spec: dict[str, Any],
    launch: Callable[..., Launch],
    tmp_path: Path,
) -> None:
    spec = _spec(job_spec, method, strategy)
    events: list[PipeMessage] = []
    two = run_job(launch(spec), devices=TWO_CPUS, out_dir=tmp_path / "two", on_event=events.append)
    assert two.status == "succeeded", (two.error, two.detail)

    one_steps: list[ProgressEvent] = []
    one_spec = {**spec, "num_gpus": 1, "strategy": None}
    one_spec["training"] = {**spec["training"], "gradient_accumulation_steps": 2}
    one = run_training(
        launch(one_spec),
        out_dir=tmp_path / "one",
        on_progress=one_steps.append,
        stop_requested=lambda: False,
    )

    act = two.actuals
    assert act is not None and one is not None
    assert (act.world_size, act.strategy, act.num_gpus) == (2, strategy, 2)
    assert act.steps == one.steps == 3
    # The same sequences, once each: the token counts are the 1-rank run's exactly.
    assert act.tokens == one.tokens and act.loss_tokens == one.loss_tokens
    losses = [e.loss for e in events if isinstance(e, ProgressEvent)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses == pytest.approx([e.loss for e in one_steps], abs=LOSS_ATOL)
    assert losses[0] != losses[-1]  # it trained
    assert act.eval_loss == pytest.approx(one.eval_loss, abs=LOSS_ATOL)
    # Metering over ranks: each rank's peak, the largest as the job's; both devices billed.
    per_rank = act.peak_memory_per_rank_bytes
    assert per_rank is not None and len(per_rank) == 2 and all(p > 50 * 2**20 for p in per_rank)
    assert act.peak_memory_bytes == max(per_rank)
    assert act.gpu_hours == pytest.approx(act.wall_s / 3600 * 2)
    assert act.cost_usd == pytest.approx(act.wall_s / 3600 * 2 * spec["price_per_gpu_hour"])

    # The artifact rank 0 saved from the sharded weights is the 1-rank run's, trained.
    name = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    saved, baseline = load_file(tmp_path / "two" / name), load_file(tmp_path / "one" / name)
    assert saved.keys() == baseline.keys()
    for key, tensor in baseline.items():
        torch.testing.assert_close(saved[key], tensor, rtol=0, atol=WEIGHT_ATOL)


def test_a_crashing_rank_fails_the_job_with_its_error(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    ranks = _Ranks()
    killed: list[int] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent) and not killed:
            victim = ranks.rank(1)
            assert victim is not None, "rank 1 not found among the launcher's children"
            killed.append(victim.pid)
            victim.send_signal(signal.SIGKILL)  # what the out-of-memory killer does

    spec = {**_spec(job_spec, "lora", "ddp"), "max_steps": LONG_RUN_STEPS}
    out = run_job(
        launch(spec),
        devices=TWO_CPUS,
        out_dir=tmp_path / "a",
        on_event=on_event,
        on_start=ranks.on_start,
    )
    assert killed
    assert out.status == "failed" and out.error_kind == "rank_died", out
    assert out.error is not None and "rank 1" in out.error and "SIGKILL" in out.error
    assert not ranks.left_running()


def test_cancel_ends_every_rank_within_the_deadline(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    ranks = _Ranks()
    training = threading.Event()
    cancel_at: list[float] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent):
            ranks.look()
            training.set()

    def should_cancel() -> bool:
        if training.is_set() and not cancel_at:
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    spec = {**_spec(job_spec, "full", "fsdp_zero3"), "max_steps": LONG_RUN_STEPS}
    out = run_job(
        launch(spec),
        devices=TWO_CPUS,
        out_dir=tmp_path / "a",
        on_event=on_event,
        should_cancel=should_cancel,
        on_start=ranks.on_start,
    )
    ended = time.monotonic()
    assert out.status == "cancelled", out
    assert cancel_at and ended - cancel_at[0] < CANCEL_DEADLINE_S
    assert len(ranks.seen) >= 3  # the launcher and its two ranks were running
    assert not ranks.left_running()


def test_budget_stops_every_rank_and_bills_both_devices(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    ranks = _Ranks()
    trained: list[int] = []

    def on_event(message: PipeMessage) -> None:
        ranks.watch(message)
        if isinstance(message, ProgressEvent):
            trained.append(message.step)

    # $3600 per GPU-hour is $1 per device-second: two devices cross the cap after
    # BUDGET_SECONDS of wall time: while the ranks train or load, as the machine's load decides;
    # either way every rank stops and both devices are billed.
    spec = {
        **_spec(job_spec, "qlora", "ddp"),  # QLoRA on several devices: DDP
        "max_steps": LONG_RUN_STEPS,
        "price_per_gpu_hour": 3600.0,
        "max_cost_usd": 2.0 * BUDGET_SECONDS,
    }
    out = run_job(
        launch(spec),
        devices=TWO_CPUS,
        out_dir=tmp_path / "a",
        on_event=on_event,
        on_start=ranks.on_start,
    )
    assert out.status == "budget_exceeded", out
    act = out.actuals
    assert act is not None and act.steps < LONG_RUN_STEPS
    # Every device is billed: the cap is reached at half the wall time one device would take.
    assert act.cost_usd >= spec["max_cost_usd"]
    assert act.cost_usd == pytest.approx(act.wall_s * 2 * 1.0, rel=1e-3)
    assert act.gpu_hours == pytest.approx(act.wall_s / 3600 * 2, rel=1e-3)
    # Rank 0 reported (the ranks saw the cap and agreed to stop together), or the parent made
    # the partial actuals of ranks it stopped; either way for both devices and every step seen.
    assert act.world_size == 2
    assert (act.stop_reason, act.strategy) == (
        (None, None) if act.partial else ("budget_exceeded", "ddp")
    )
    assert act.steps >= (trained[-1] if trained else 0)
    assert not ranks.left_running()
