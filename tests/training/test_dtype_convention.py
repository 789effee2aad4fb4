"""The worker stores each tensor in the dtype the memory estimate counts (conventions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.estimator.memory import state_bytes
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import AdapterDtype, LoraSpec, Method, QLoraSpec, TrainingSpec
from app.jobs.spec import JobSpec, ModelRef
from tests.estimator.realmodel import TINY, build_real
from worker.training.model import (
    _add_lora,
    adapter_torch_dtype,
    base_torch_dtype,
    resolve_precision,
    upcast_trained_to_fp32,
)

BF16_TRUE_ON_GPU = resolve_precision("bf16_true", device_type="cuda", bf16_ok=True)


@pytest.mark.parametrize(
    ("method", "precision", "expected"),
    [
        (Method.FULL, "bf16_mixed", torch.float32),  # fp32 masters, autocast computes in bf16
        (Method.FULL, "bf16_true", torch.bfloat16),
        (Method.LORA, "bf16_mixed", torch.bfloat16),  # a frozen base needs no fp32 master
        (Method.LORA, "fp16_mixed", torch.float16),
        (Method.QLORA, "bf16_mixed", torch.bfloat16),  # non-4-bit parts: not upcast to fp32
        (Method.QLORA, "bf16_true", torch.bfloat16),
        (Method.LORA, "fp32", torch.float32),
    ],
)
def test_gpu_base_dtype_follows_the_convention(
    method: Method, precision: str, expected: torch.dtype
) -> None:
    plan = resolve_precision(precision, device_type="cuda", bf16_ok=True)
    assert base_torch_dtype(method, plan) == expected


def test_cpu_trains_everything_in_fp32() -> None:
    plan = resolve_precision("bf16_true", device_type="cpu", bf16_ok=True)
    assert base_torch_dtype(Method.QLORA, plan) == torch.float32


@pytest.mark.parametrize("adapter_dtype", ["fp32", "bf16"])
def test_worker_adapters_on_a_bf16_base_cost_what_the_estimate_counts(
    adapter_dtype: AdapterDtype, tmp_path: Path
) -> None:
    """A bf16 base through the worker's own `_add_lora`: stored bytes equal the estimate's,
    with peft's fp32 adapters or the bf16 ones the planner may choose."""
    config = TINY["llama"]
    model = build_real(config).to(torch.bfloat16)
    lora = LoraSpec(r=4, target_modules=["q_proj", "v_proj"])
    spec = JobSpec(
        method=Method.LORA,
        model=ModelRef(path=str(tmp_path)),
        lora=lora,
        training=TrainingSpec(adapter_dtype=adapter_dtype),
    )
    peft_model = _add_lora(model, spec, BF16_TRUE_ON_GPU)
    adapters = {p.dtype for n, p in peft_model.named_parameters() if ".lora_" in n}
    assert adapters == {torch.float32 if adapter_dtype == "fp32" else torch.bfloat16}
    stored = sum(p.numel() * p.element_size() for p in peft_model.parameters())
    est = state_bytes(
        analysis=analyze_model(config),
        method=Method.LORA,
        precision="bf16_true",
        optimizer="sgd",
        lora=lora,
        qlora=QLoraSpec(),
        adapters_fp32=adapter_dtype == "fp32",
    )
    assert est.weights == stored


def test_bf16_adapters_fall_back_to_fp32_where_the_run_trains_in_fp32(tmp_path: Path) -> None:
    # on a CPU everything trains in fp32 (model.py): adapters too, whatever the plan chose
    spec = JobSpec(
        method=Method.LORA,
        model=ModelRef(path=str(tmp_path)),
        training=TrainingSpec(adapter_dtype="bf16"),
    )
    cpu = resolve_precision("bf16_true", device_type="cpu", bf16_ok=False)
    assert adapter_torch_dtype(spec, cpu) == torch.float32
    assert adapter_torch_dtype(spec, BF16_TRUE_ON_GPU) == torch.bfloat16


@pytest.mark.parametrize("precision", ["bf16_true", "bf16_mixed"])
def test_modules_to_save_copies_train_in_the_dtype_the_estimate_counts(
    precision: str, tmp_path: Path
) -> None:
    """peft leaves modules_to_save copies in the base dtype; under autocast the worker makes
    them fp32 masters (GradScaler refuses fp16 gradients), under bf16_true they stay bf16."""
    config = TINY["llama"]
    lora = LoraSpec(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    spec = JobSpec(
        method=Method.LORA,
        model=ModelRef(path=str(tmp_path)),
        lora=lora,
    )
    plan = resolve_precision(precision, device_type="cuda", bf16_ok=True)
    model = _add_lora(build_real(config).to(torch.bfloat16), spec, plan)
    if plan.autocast_dtype is not None:
        assert upcast_trained_to_fp32(model) > 0  # the lm_head copy
    stored = sum(p.numel() * p.element_size() for p in model.parameters())
    est = state_bytes(
        analysis=analyze_model(config),
        method=Method.LORA,
        precision=precision,
        optimizer="sgd",
        lora=lora,
        qlora=QLoraSpec(),
    )
    assert est.weights + est.master_weights == stored
