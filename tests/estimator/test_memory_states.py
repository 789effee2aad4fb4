"""Weight, gradient and optimizer-state bytes against the real tensors after one training step
on CPU, for full fine-tuning, LoRA and QLoRA and every optimizer that runs on CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
from torch import nn

from app.estimator.memory import state_bytes
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import LoraSpec, Method, QLoraSpec
from app.estimator.states import quantized_linear_bytes
from tests.estimator.realmodel import (
    TINY,
    batch,
    build_real,
    load_4bit,
    with_lora,
    worker_adapters_fp32,
)
from tests.support import force_avx512bf16

LORA = LoraSpec(r=4, dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])


def _optimizer(name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    import bitsandbytes as bnb
    from transformers.optimization import Adafactor

    makers: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adamw": lambda: torch.optim.AdamW(params, lr=1e-3),
        "sgd": lambda: torch.optim.SGD(params, lr=1e-3),
        "adafactor": lambda: Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False),
        "adamw_8bit": lambda: bnb.optim.AdamW8bit(params, lr=1e-3),
        "paged_adamw_8bit": lambda: bnb.optim.PagedAdamW8bit(params, lr=1e-3),
        "paged_adamw_32bit": lambda: bnb.optim.PagedAdamW32bit(params, lr=1e-3),
    }
    return makers[name]()


def _storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _weight_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter, plus the quantization constants bitsandbytes keeps beside 4-bit ones."""
    out: list[torch.Tensor] = list(model.parameters())
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        if state is None:
            continue
        out += [state.absmax, state.code]
        if state.nested:
            out += [state.offset, state.state2.absmax, state.state2.code]
    return out


def _one_step(
    method: Method, precision: str, optimizer: str, qlora: QLoraSpec, tmp_path: Path
) -> tuple[int, int, int]:
    """Train one step for real; return (weight, gradient, optimizer-state) bytes."""
    config = TINY["llama"]
    model = build_real(config)
    mixed = precision.endswith("_mixed")
    if method is Method.QLORA:
        model = load_4bit(
            model, tmp_path, quant_type=qlora.quant_type, double_quant=qlora.double_quant
        )
    elif precision == "bf16_true" or (mixed and method is Method.LORA):
        model = model.to(torch.bfloat16)
    if method is not Method.FULL:
        model.requires_grad_(False)
        model = with_lora(model, LORA, fp32_adapters=worker_adapters_fp32(precision))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(optimizer, params)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed)
    with cast:
        loss = model(**batch(config)).loss
    loss.backward()
    opt.step()
    grads = _storage_bytes(p.grad for p in params if p.grad is not None)
    states = _storage_bytes(
        v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0
    )  # per-tensor 0-d scalars (step counters, Adafactor's RMS) are not counted
    return _storage_bytes(_weight_tensors(model)), grads, states


# QLoRA cases run with bitsandbytes' AVX512-BF16 CPU branch forced on and off, so both layouts
# bitsandbytes could choose are checked on any machine (the one-step forward runs in eval mode,
# the mode in which that branch repacks 4-bit weights unless the worker stops it).
AVX512BF16 = [pytest.param(False, id="no_avx512bf16"), pytest.param(True, id="avx512bf16")]

CASES = [
    (Method.FULL, "bf16_true", "adamw"),
    (Method.FULL, "fp32", "adamw"),
    (Method.FULL, "bf16_mixed", "adamw"),
    (Method.FULL, "bf16_true", "sgd"),
    (Method.FULL, "bf16_true", "adafactor"),
    (Method.FULL, "fp32", "adamw_8bit"),
    (Method.FULL, "bf16_true", "paged_adamw_8bit"),
    (Method.FULL, "bf16_true", "paged_adamw_32bit"),
    (Method.LORA, "bf16_true", "adamw"),
    (Method.LORA, "bf16_mixed", "adamw"),
    (Method.LORA, "fp32", "adafactor"),
    (Method.LORA, "bf16_true", "adamw_8bit"),
]
QLORA_CASES = [
    (Method.QLORA, "bf16_true", "adamw"),
    (Method.QLORA, "bf16_mixed", "paged_adamw_32bit"),
]


@pytest.mark.parametrize(("method", "precision", "optimizer"), CASES)
def test_state_bytes_equal_real_tensors_after_a_step(
    method: Method, precision: str, optimizer: str, tmp_path: Path
) -> None:
    _check_state_bytes(method, precision, optimizer, tmp_path)


@pytest.mark.parametrize("avx512bf16", AVX512BF16)
@pytest.mark.parametrize(("method", "precision", "optimizer"), QLORA_CASES)
def test_qlora_state_bytes_on_either_cpu_branch(
    method: Method,
    precision: str,
    optimizer: str,
    avx512bf16: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    force_avx512bf16(monkeypatch, on=avx512bf16)
    _check_state_bytes(method, precision, optimizer, tmp_path)


def _check_state_bytes(method: Method, precision: str, optimizer: str, tmp_path: Path) -> None:
    qlora = QLoraSpec(quant_type="nf4", double_quant=True)
    weights, grads, states = _one_step(method, precision, optimizer, qlora, tmp_path)
    est = state_bytes(
        analysis=analyze_model(TINY["llama"]),
        method=method,
        precision=precision,
        optimizer=optimizer,
        lora=LORA,
        qlora=qlora,
    )
    assert est.weights + est.master_weights == weights
    assert est.gradients == grads
    assert est.optimizer.states == states


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_4bit_weights_equal_bitsandbytes_tensors(
    quant_type: str, double_quant: bool, tmp_path: Path
) -> None:
    qlora = QLoraSpec(quant_type=quant_type, double_quant=double_quant)
    model = load_4bit(
        build_real(TINY["mistral"]), tmp_path, quant_type=quant_type, double_quant=double_quant
    )
    est = state_bytes(
        analysis=analyze_model(TINY["mistral"]),
        method=Method.QLORA,
        precision="bf16_true",
        optimizer="sgd",
        lora=LoraSpec(r=2),
        qlora=qlora,
    )
    adapters = est.trainable_params * 4  # fp32 adapters (the convention), not created here
    assert est.weights - adapters == _storage_bytes(_weight_tensors(model))


def test_4bit_constants_cost_what_the_formats_say() -> None:
    n = 4096 * 4096
    plain = quantized_linear_bytes(n, scheme="nf4")
    nested = quantized_linear_bytes(n, scheme="nf4", double_quant=True)
    assert plain / n == pytest.approx(0.5 + 4 / 64, rel=1e-4)  # 4.5 bits per weight
    assert nested / n == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256), rel=1e-3)  # ~4.13 bits
    assert quantized_linear_bytes(n, scheme="int8", out_features=4096) == n + 4096 * 4
