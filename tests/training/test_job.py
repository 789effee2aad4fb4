"""The training job in-process: budget stop with a saved artifact, and every clear error."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from app.estimator.states import BNB_8BIT_QMAPS_BYTES, optimizer_bytes
from devtools.tinymodel import make_tiny_model
from tests.support import force_avx512bf16
from worker.training.errors import (
    JobSpecError,
    ModelLoadError,
    NanLossError,
    UnsupportedOnDevice,
)
from worker.training.job import TrainingRecipe, run_training
from worker.training.messages import ProgressEvent
from worker.training.model import load_model
from worker.training.spec import Launch, parse_launch


def _run(launch: Launch, out_dir: Path, events: list[ProgressEvent] | None = None) -> Any:
    sink: list[ProgressEvent] = [] if events is None else events
    return run_training(
        launch, out_dir=out_dir, on_progress=sink.append, stop_requested=lambda: False
    )


def test_budget_stop_saves_what_it_has(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    # $1 per second from now; the loop must notice the $5 cap at a step boundary and save.
    # The libraries are imported first, so the 5 s go to loading the tiny model and training.
    import peft  # noqa: F401
    import transformers  # noqa: F401

    events: list[ProgressEvent] = []
    raw = {
        **job_spec,
        "max_steps": 1_000_000,
        "price_per_gpu_hour": 3600.0,
        "max_cost_usd": 5.0,
    }
    act = _run(launch(raw, started_at=time.time()), tmp_path / "out", events)
    assert act.stop_reason == "budget_exceeded"
    assert act.steps == len(events) >= 1
    # It stopped at the first step boundary past the cap, not later.
    assert all(e.accrued_cost_usd < 5.0 for e in events[:-1])
    # ... and within 10% of it, the step it was in and saving the adapter included
    print(f"budget $5 (5 s): stopped at ${act.cost_usd:.3f} after {act.steps} steps")
    assert 5.0 <= act.cost_usd <= 1.1 * 5.0
    assert act.artifact_bytes > 0 and (tmp_path / "out" / "adapter_config.json").is_file()
    assert act.eval_loss is None  # a stopped run spends nothing more on evaluation


def test_stop_requested_before_the_first_step_saves_nothing(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    act = run_training(
        launch(job_spec),
        out_dir=tmp_path / "out",
        on_progress=lambda e: None,
        stop_requested=lambda: True,
    )
    assert act.stop_reason == "cancelled" and act.steps == 0
    assert act.artifact_path is None and not (tmp_path / "out").exists()


def test_huge_learning_rate_is_a_clear_nan_error(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    raw = {**job_spec, "method": "full", "learning_rate": 1e30, "max_steps": 20}
    with pytest.raises(NanLossError) as err:
        _run(launch(raw), tmp_path / "out")
    assert err.value.kind == "nan_loss" and err.value.step >= 2
    assert "diverged" in str(err.value) and "learning rate" in str(err.value)


def test_the_plans_levers_are_what_the_worker_runs(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    """A plan's levers (gradient checkpointing, 8-bit AdamW, micro-batch x accumulation) are
    the settings the job's model, optimizer and loop are built with; the 8-bit states are the
    bytes the estimate counts."""
    import bitsandbytes as bnb

    training = {
        **job_spec["training"],
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "gradient_checkpointing": True,
        "optimizer": "adamw_8bit",
    }
    spec = {**job_spec, "training": training, "max_steps": 2}
    recipe = TrainingRecipe(launch(spec), out_dir=tmp_path / "out")
    setup = recipe.setup()
    assert setup.loaded.model.get_base_model().is_activation_checkpointing
    assert isinstance(setup.optimizer, bnb.optim.AdamW8bit)
    result = recipe.train(setup, on_progress=lambda e: None, stop_requested=lambda: False)
    assert result.steps == 2 and result.stop_reason == "completed"
    trained = [p for p in setup.model.parameters() if p.requires_grad]
    held = sum(
        t.numel() * t.element_size()
        for state in setup.optimizer.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor)
    )
    counted = optimizer_bytes(
        "adamw_8bit", shapes=[tuple(p.shape) for p in trained], param_bytes=4
    ).states
    # bitsandbytes keeps its two 256-entry quantization maps per tensor in `state`; the
    # estimate counts them once per optimizer (they are shared on CUDA)
    maps = sum(
        t.numel() * t.element_size()
        for state in setup.optimizer.state.values()
        for key, t in state.items()
        if key.startswith("qmap")
    )
    assert held - maps == counted - (BNB_8BIT_QMAPS_BYTES if maps else 0)


def test_flash_attention_on_cpu(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    raw = {**job_spec, "training": {**job_spec["training"], "attention": "flash_attention_2"}}
    with pytest.raises(UnsupportedOnDevice, match="flash_attention_2"):
        _run(launch(raw), tmp_path / "out")


def test_unknown_lora_targets_name_the_real_modules(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    raw = {**job_spec, "lora": {"target_modules": ["query_key_value"]}}
    with pytest.raises(JobSpecError) as err:
        _run(launch(raw), tmp_path / "out")
    assert "query_key_value" in str(err.value) and "q_proj" in str(err.value)


def test_model_outside_the_allowed_roots(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match="outside the allowed model roots"):
        _run(launch(job_spec, model_roots=[str(tmp_path / "models")]), tmp_path / "out")


def test_folder_without_config(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    raw = {**job_spec, "model": {"path": str(tmp_path / "empty")}}
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        _run(launch(raw), tmp_path / "out")


def test_uncached_hub_id_offline(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    raw = {**job_spec, "model": {"hub_id": "tunecost-test/not-a-model"}}
    with pytest.raises(ModelLoadError, match="tunecost-test/not-a-model"):
        _run(launch(raw, offline=True), tmp_path / "out")


def test_several_devices_need_the_launcher(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    with pytest.raises(JobSpecError, match="one rank per device"):
        _run(launch({**job_spec, "num_gpus": 2}), tmp_path / "out")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"path": "a", "hub_id": "b"}}, "model"),
        ({"method": "prefix"}, "method"),
        ({"training": {"seq_len": 0}}, "training.seq_len"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"max_cost_usd": -1}, "max_cost_usd"),
        ({"learning_rate_typo": 1}, "learning_rate_typo"),
    ],
)
def test_bad_job_spec_names_the_field(
    change: dict[str, Any], field: str, job_spec: dict[str, Any]
) -> None:
    with pytest.raises(JobSpecError) as err:
        parse_launch({"spec": {**job_spec, **change}, "run": {"job_id": "j", "dataset_path": "d"}})
    assert field in str(err.value)


def test_gradient_accumulation_matches_one_big_batch(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    """One step of 4 sequences equals one step of 2 x 2 accumulated (token-weighted loss)."""
    from safetensors.torch import load_file

    weights = []
    for mbs, accum in ((4, 1), (2, 2)):
        raw = {
            **job_spec,
            "method": "full",
            "max_steps": 1,
            "eval_fraction": 0.0,
            "training": {
                "micro_batch_size": mbs,
                "gradient_accumulation_steps": accum,
                "optimizer": "sgd",
                "precision": "fp32",
            },
            "max_grad_norm": None,
            "learning_rate": 0.5,
        }
        _run(launch(raw), tmp_path / f"out-{mbs}")
        weights.append(load_file(tmp_path / f"out-{mbs}" / "model.safetensors"))
    big, accumulated = weights
    for name, tensor in big.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("avx512bf16", [False, True], ids=["no_avx512bf16", "avx512bf16"])
def test_qlora_with_an_eval_split_on_either_cpu_branch(
    avx512bf16: bool,
    job_spec: dict[str, Any],
    launch: Callable[..., Launch],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tiny model's 32-wide layers are below bitsandbytes' 64-wide quantization block: its
    # AVX512-BF16 repacking fails on them ("shape '[32, 0]' is invalid") unless the worker
    # keeps the training layout, so this job fails with the branch on if that is undone.
    force_avx512bf16(monkeypatch, on=avx512bf16)
    act = _run(launch({**job_spec, "method": "qlora", "eval_fraction": 0.2}), tmp_path / "out")
    assert act.stop_reason == "completed"
    assert act.eval_loss is not None and math.isfinite(act.eval_loss)
    assert (tmp_path / "out" / "adapter_config.json").is_file()


@pytest.mark.parametrize("hidden", [32, 84], ids=["hidden32", "hidden84_mlp168"])
def test_qlora_model_trains_after_an_eval_pass_with_avx512bf16(
    hidden: int,
    job_spec: dict[str, Any],
    launch: Callable[..., Launch],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 84 and its MLP width 168 divide by neither 32 nor 64: shapes the repacked layout refuses
    # ("N must be divisible by block_n"), which the training layout takes.
    import bitsandbytes as bnb

    force_avx512bf16(monkeypatch, on=True)
    folder = make_tiny_model(tmp_path / "model", vocab_size=256, hidden_size=hidden, heads=2)
    raw = {**job_spec, "method": "qlora", "model": {"path": str(folder)}}
    model = load_model(launch(raw), device=torch.device("cpu"), bf16_ok=False).model
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    ids = torch.randint(3, 200, (2, 16))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # the forward that would repack the weights in place
    states = [m.weight.quant_state for m in layers]  # type: ignore[attr-defined]  # bitsandbytes' Params4bit; Linear4bit types its weight as a plain Tensor
    assert not any(getattr(s, "packing_format_for_cpu", False) for s in states)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_stop_while_evaluating_ends_the_evaluation(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    """Evaluation asks before each held-out batch, as training does before each step: a stop
    (a cancel or a crossed budget, one check) arriving once every step has run ends the final
    evaluation without a loss, and the run ends as stopped."""
    phases: list[str] = []
    recipe = TrainingRecipe(
        launch({**job_spec, "max_steps": 1}),
        out_dir=tmp_path / "out",
        on_phase=lambda name, info: phases.append(name),
    )
    setup = recipe.setup()
    assert setup.data.eval, "the tiny dataset holds out examples to evaluate on"
    result = recipe.train(
        setup, on_progress=lambda e: None, stop_requested=lambda: phases[-1] == "evaluating"
    )
    assert result.steps == 1 == result.total_steps and result.eval_loss is None
    assert result.stop_reason == "cancelled" and phases[-1] == "evaluating"
    finished = TrainingRecipe(launch({**job_spec, "max_steps": 1}), out_dir=tmp_path / "b")
    done = finished.train(
        finished.setup(), on_progress=lambda e: None, stop_requested=lambda: False
    )
    assert done.stop_reason == "completed" and done.eval_loss is not None
