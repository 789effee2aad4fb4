"""Real training in a spawned child: each method, cancel, budget, faults (tiny model, CPU).

Each test starts a fresh Python process that imports torch, transformers and peft, so most of
a test's time is the child's start-up, not training.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from app.evals.points import EvalPoint
from worker.training.messages import PhaseEvent, PipeMessage, ProgressEvent, ResultMessage
from worker.training.runner import Throttle, TrainingChild, run_in_child, run_job
from worker.training.spec import Launch

pytestmark = pytest.mark.slow
CANCEL_DEADLINE_S = 10.0  # the requirement: cancel ends the child within 10 s
LONG_RUN_STEPS = 1_000_000  # far more than any test waits for


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_each_method_trains_meters_and_saves(
    method: str,
    job_spec: dict[str, Any],
    launch: Callable[..., Launch],
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    events: list[PipeMessage] = []
    spec = {**job_spec, "method": method}
    out = run_in_child(launch(spec), out_dir=tmp_path / "artifact", on_event=events.append)

    assert out.status == "succeeded", out.error
    act = out.actuals
    assert act is not None
    assert act.steps == 3 and act.stop_reason == "completed"
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    steps = [e.step for e in progress]
    assert steps == sorted(set(steps)) and steps[-1] == 3
    assert all(math.isfinite(e.loss) and e.total_steps == 3 for e in progress)
    assert isinstance(events[-1], ResultMessage)
    # Phases arrive in order, progress only while training.
    kinds = [e.phase if isinstance(e, PhaseEvent) else e.type for e in events]
    # The eval curve: the base model, the steps inside the run, then the completed run.
    assert [k for k in kinds if k != "progress"] == [
        "loading_model",
        "preparing_data",
        "training",
        "eval",
        "eval",
        "eval",
        "evaluating",
        "eval",
        "saving",
        "result",
    ]
    assert [e.step for e in events if isinstance(e, EvalPoint)] == [0, 1, 2, 3]
    assert kinds.index("training") < kinds.index("progress") and kinds[-5] == "progress"

    # Tokens: 3 steps x 4 sequences, each micro-batch padded to its longest (at most seq_len).
    seq_len = act.data["seq_len"]
    # A finished run sets every figure below (only a child that died leaves them unset).
    assert act.tokens_processed is not None and act.loss_tokens is not None
    assert act.tokens is not None and act.tokens_per_s is not None
    assert act.train_s is not None and act.startup_s is not None and act.wall_s is not None
    assert act.warmup_s is not None
    assert act.tokens_processed <= 3 * 4 * seq_len
    assert 0 < act.loss_tokens < act.tokens <= act.tokens_processed
    assert act.tokens_per_s > 0 and act.train_s > 0
    assert act.startup_s + act.train_s <= act.wall_s
    assert 0 <= act.warmup_s <= act.train_s  # the first step's set-up, part of the loop
    # Metering: peak RSS of the child on the CPU, money from wall time, MFU from FLOPs/token.
    assert act.peak_memory_bytes is not None
    assert act.peak_memory_kind == "cpu_rss" and act.peak_memory_bytes > 50 * 2**20
    assert act.device_kind == "cpu" and act.energy_kwh is None
    assert act.cost_usd == pytest.approx(act.wall_s / 3600 * 2.0)
    assert act.gpu_hours == pytest.approx(act.wall_s / 3600)
    assert act.achieved_tflops == pytest.approx(1e6 * act.tokens_processed / act.train_s / 1e12)
    assert act.mfu is not None and 0 < act.mfu < 1
    assert act.precision == "fp32"
    assert act.eval_loss is not None and math.isfinite(act.eval_loss)
    assert act.library_versions["torch"] == importlib.metadata.version("torch")

    # The artifact: its recorded size is the folder's, and it holds trained weights.
    assert act.artifact_path is not None
    art = Path(act.artifact_path)
    assert act.artifact_bytes == sum(f.stat().st_size for f in art.rglob("*") if f.is_file())
    if method == "full":
        trained = load_file(art / "model.safetensors")
        base = load_file(tiny_model / "model.safetensors")
        assert trained.keys() == base.keys()
        assert any(not torch.equal(trained[k], base[k]) for k in base)
        assert act.trainable_params == act.total_params
    else:
        adapter = load_file(art / "adapter_model.safetensors")
        lora_b = [v for k, v in adapter.items() if "lora_B" in k]
        assert lora_b, "no LoRA B matrices saved"
        # peft initialises B to zero; any non-zero entry was learned.
        assert any(v.abs().sum() > 0 for v in lora_b)
        assert act.trainable_params is not None and act.total_params is not None
        assert act.trainable_params < act.total_params
        assert not (art / "model.safetensors").exists()


def test_cancel_ends_a_long_child_within_deadline(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    started = threading.Event()
    cancel_at: list[float] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent):
            started.set()

    def should_cancel() -> bool:
        if started.is_set() and not cancel_at:
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    ticks: list[float] = []
    spec = {**job_spec, "max_steps": LONG_RUN_STEPS}
    out = run_in_child(
        launch(spec),
        out_dir=tmp_path / "artifact",
        on_event=on_event,
        should_cancel=should_cancel,
        on_tick=lambda: ticks.append(time.monotonic()),
    )
    ended = time.monotonic()
    assert out.status == "cancelled", out
    assert cancel_at and ended - cancel_at[0] < CANCEL_DEADLINE_S
    assert out.actuals is not None and 0 < out.actuals.steps < LONG_RUN_STEPS
    assert out.actuals.cost_usd > 0
    assert len(ticks) >= 2  # the heartbeat hook runs during start-up and training alike


def test_stop_kills_a_child_that_ignores_sigterm(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    holder: list[TrainingChild] = []
    took: list[float] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent) and not took:
            child = holder[0]
            assert child.pid is not None
            # A stopped process cannot run its SIGTERM handler: only SIGKILL can end it now.
            os.kill(child.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            child.stop(grace_s=1.0)
            took.append(time.monotonic() - t0)

    out = run_in_child(
        launch({**job_spec, "max_steps": LONG_RUN_STEPS}),
        out_dir=tmp_path / "artifact",
        on_event=on_event,
        on_start=holder.append,
    )
    assert took and took[0] < CANCEL_DEADLINE_S
    assert out.status == "cancelled" and out.exit_code == -signal.SIGKILL


def test_budget_cap_stops_the_child(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    # $3600 per GPU-hour is $1 per second: a $2 cap is crossed two seconds after the job starts.
    spec = {
        **job_spec,
        "max_steps": LONG_RUN_STEPS,
        "price_per_gpu_hour": 3600.0,
        "max_cost_usd": 2.0,
    }
    out = run_in_child(launch(spec), out_dir=tmp_path / "artifact")
    assert out.status == "budget_exceeded"
    assert out.actuals is not None and out.actuals.steps < LONG_RUN_STEPS
    assert out.actuals.cost_usd >= 2.0


def test_a_budget_crossed_while_loading_stops_within_ten_percent(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    """A budget of a few cents, crossed before the first step (the child is still importing
    or loading the model, where it checks nothing itself): the worker, which reads the accrued
    cost every POLL_S, ends the run within 10% of it, not after the grace a training step gets."""
    price = 36.0  # $0.01 per second
    budget = 0.03  # crossed 3 s after the start, while the child still imports its libraries
    spec = {**job_spec, "max_steps": LONG_RUN_STEPS, "price_per_gpu_hour": price}
    phases: list[str] = []
    out = run_in_child(
        launch({**spec, "max_cost_usd": budget}),
        out_dir=tmp_path / "artifact",
        on_event=lambda m: phases.append(m.phase) if isinstance(m, PhaseEvent) else None,
    )
    assert out.status == "budget_exceeded" and out.actuals is not None
    assert "training" not in phases  # stopped before it trained: nothing to save
    cost = out.actuals.cost_usd
    print(f"budget ${budget}: stopped at ${cost:.5f} ({cost / budget - 1:+.1%}), phases {phases}")
    assert budget <= cost <= 1.1 * budget
    assert out.exit_code == -signal.SIGKILL and out.actuals.steps == 0


def test_bad_model_path_fails_clearly(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    spec = {**job_spec, "model": {"path": str(tmp_path / "no-such-model")}}
    out = run_in_child(launch(spec), out_dir=tmp_path / "artifact")
    assert out.status == "failed" and out.error_kind == "model_load"
    assert out.error is not None and "no-such-model" in out.error and "not found" in out.error


def test_child_killed_from_outside_is_a_clear_failure(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    holder: list[TrainingChild] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent) and holder[0].pid:
            os.kill(holder[0].pid, signal.SIGKILL)  # what the OOM killer does

    out = run_in_child(
        launch({**job_spec, "max_steps": LONG_RUN_STEPS}),
        out_dir=tmp_path / "artifact",
        on_event=on_event,
        on_start=holder.append,
    )
    assert out.status == "failed" and out.error_kind == "child_died"
    assert out.error is not None and "SIGKILL" in out.error
    assert out.actuals is not None and out.actuals.partial and out.actuals.steps >= 1


def _progress(step: int) -> ProgressEvent:
    return ProgressEvent(
        step=step,
        total_steps=5,
        loss=2.0,
        tokens=100 * step,
        tokens_per_s=50.0,
        elapsed_s=2.0 * step,
        accrued_cost_usd=0.01 * step,
    )


def test_throttle_forwards_first_then_holds_and_flushes() -> None:
    got: list[PipeMessage] = []
    throttle = Throttle(got.append, interval_s=3600)
    for step in range(1, 6):
        throttle(_progress(step))
    assert got == [_progress(1)]
    throttle(PhaseEvent(phase="saving"))
    assert got == [_progress(1), _progress(5), PhaseEvent(phase="saving")]


def _run_from_pool_worker(launch_json: dict[str, Any], out_dir: str) -> dict[str, Any]:
    return run_in_child(Launch.model_validate(launch_json), out_dir=Path(out_dir)).to_dict()


def test_runs_inside_a_celery_prefork_worker(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    """Celery's pool processes are daemonic; the runner must still start its child there."""
    import billiard

    spec = {**job_spec, "model": {"path": str(tmp_path / "no-such-model")}}  # fails fast
    with billiard.Pool(1) as pool:
        args = (launch(spec).model_dump(mode="json"), str(tmp_path / "artifact"))
        out = pool.apply(_run_from_pool_worker, args)
    assert out["status"] == "failed" and out["error_kind"] == "model_load"


def test_run_job_on_one_cpu_device_trains(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    out = run_job(launch(job_spec), devices=["cpu:0"], out_dir=tmp_path / "artifact")
    assert out.status == "succeeded", out.error
    assert out.actuals is not None and out.actuals.num_gpus == 1


class _CallerGone(BaseException):
    """What an interrupt or a test timeout raises in the caller (not an Exception)."""


def test_a_caller_that_leaves_takes_the_child_with_it(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    holder: list[TrainingChild] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent):
            raise _CallerGone

    with pytest.raises(_CallerGone):
        run_in_child(
            launch({**job_spec, "max_steps": LONG_RUN_STEPS}),
            out_dir=tmp_path / "artifact",
            on_event=on_event,
            on_start=holder.append,
        )
    assert holder and not holder[0].is_alive()
