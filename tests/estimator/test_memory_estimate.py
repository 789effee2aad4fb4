"""The per-GPU memory estimate: how its parts add up and respond to each setting."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.model_catalog import get_model_config
from app.estimator.lora import lora_trainable_params
from app.estimator.memory import MemoryEstimate, estimate_memory, state_bytes
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import LoraSpec, Method, QLoraSpec, TrainingSpec

LLAMA2_7B = "meta-llama/Llama-2-7b-hf"
LLAMA3_8B = "meta-llama/Meta-Llama-3-8B"


def _estimate(
    model: str = LLAMA2_7B,
    method: Method = Method.LORA,
    seq_len: int = 1024,
    lora: LoraSpec | None = None,
    qlora: QLoraSpec | None = None,
    num_gpus: int = 1,
    sharding: str = "auto",
    **training: Any,
) -> MemoryEstimate:
    return estimate_memory(
        analysis=analyze_model(get_model_config(model)),
        method=method,
        training=TrainingSpec(**training),
        lora=lora or LoraSpec(),
        qlora=qlora or QLoraSpec(),
        seq_len=seq_len,
        num_gpus=num_gpus,
        sharding=sharding,
    )


@pytest.mark.parametrize("method", list(Method))
def test_parts_add_up_and_bounds_are_ordered(method: Method) -> None:
    est = _estimate(method=method, micro_batch_size=2)
    assert sum(est.breakdown.as_dict().values()) == est.per_gpu_bytes
    assert est.low_bytes <= est.per_gpu_bytes <= est.high_bytes
    assert est.allocated_bytes <= est.reserved_bytes <= est.per_gpu_bytes
    assert est.strategy == "single"


def test_lora_peak_is_backward_start_with_exact_weights() -> None:
    est = _estimate(precision="bf16_true", seq_len=2048)
    states = state_bytes(
        analysis=analyze_model(get_model_config(LLAMA2_7B)),
        method=Method.LORA,
        precision="bf16_true",
        optimizer="adamw",
        lora=LoraSpec(),
        qlora=QLoraSpec(),
    )
    assert est.peak_phase == "backward_start"
    # bf16 base, fp32 adapters (conventions.ADAPTERS_FP32)
    assert est.breakdown.weights == states.weights == 6_738_415_616 * 2 + 4_194_304 * 4
    assert est.breakdown.activations > 0 and est.breakdown.logits > 0


def test_full_fine_tuning_short_sequences_peak_at_the_optimizer_step() -> None:
    est = _estimate(method=Method.FULL, precision="bf16_true", seq_len=64)
    params = 6_738_415_616
    assert est.peak_phase == "optimizer_step"
    assert est.breakdown.gradients == 2 * params
    # AdamW: exp_avg + exp_avg_sq in bf16, plus the foreach step's sqrt(exp_avg_sq) copy
    assert est.breakdown.optimizer_states == 4 * params + 2 * params
    assert est.breakdown.activations == 0


def test_mixed_precision_adds_fp32_masters_for_trainable_weights_only() -> None:
    true_bf16 = _estimate(method=Method.FULL, precision="bf16_true", seq_len=64)
    mixed = _estimate(method=Method.FULL, precision="bf16_mixed", seq_len=64)
    assert true_bf16.breakdown.master_weights == 0
    assert mixed.breakdown.master_weights == 4 * 6_738_415_616
    lora_mixed = _estimate(precision="bf16_mixed")
    assert lora_mixed.breakdown.master_weights == 4 * 4_194_304


def test_checkpointing_and_kernels_move_activations_the_right_way() -> None:
    plain = _estimate(seq_len=4096)
    ckpt = _estimate(seq_len=4096, gradient_checkpointing=True)
    eager = _estimate(seq_len=4096, attention="eager")
    flash = _estimate(seq_len=4096, attention="flash_attention_2")
    assert ckpt.breakdown.activations < plain.breakdown.activations / 4
    assert eager.breakdown.activations > plain.breakdown.activations
    assert flash.breakdown.activations == plain.breakdown.activations


def test_qlora_quantizes_the_base_and_double_quant_saves_more() -> None:
    lora = _estimate()
    nf4 = _estimate(method=Method.QLORA, qlora=QLoraSpec(double_quant=False))
    nf4_dq = _estimate(method=Method.QLORA, qlora=QLoraSpec(double_quant=True))
    assert nf4.breakdown.weights < lora.breakdown.weights / 3
    assert nf4_dq.breakdown.weights < nf4.breakdown.weights
    assert nf4.breakdown.activations == lora.breakdown.activations  # bnb >= 0.43.2


def test_sharding_divides_states_across_gpus() -> None:
    kwargs: dict[str, Any] = dict(method=Method.FULL, model=LLAMA3_8B, seq_len=2048)
    single = _estimate(**kwargs)
    ddp = _estimate(num_gpus=8, sharding="ddp", **kwargs)
    zero2 = _estimate(num_gpus=8, sharding="fsdp_zero2", **kwargs)
    zero3 = _estimate(num_gpus=8, sharding="fsdp_zero3", **kwargs)
    assert _estimate(num_gpus=8, **kwargs).strategy == "fsdp_zero3"
    assert zero3.per_gpu_bytes < zero2.per_gpu_bytes < single.per_gpu_bytes < ddp.per_gpu_bytes
    assert zero3.activations == single.activations  # data parallel: activations are not split


def test_gradient_accumulation_keeps_gradients_through_backward() -> None:
    one = _estimate(method=Method.FULL, model=LLAMA3_8B, seq_len=4096)
    many = _estimate(
        method=Method.FULL, model=LLAMA3_8B, seq_len=4096, gradient_accumulation_steps=8
    )
    assert one.peak_phase == many.peak_phase == "backward_start"
    assert many.per_gpu_bytes - one.per_gpu_bytes >= 2 * 8_030_261_248 * 0.99


def test_paged_optimizer_states_are_outside_torch_allocator() -> None:
    torch_adam = _estimate(
        method=Method.FULL, precision="bf16_true", seq_len=64, optimizer="paged_adamw_32bit"
    )
    states = torch_adam.breakdown.optimizer_states
    assert states == 8 * 6_738_415_616
    assert torch_adam.per_gpu_bytes - torch_adam.reserved_bytes > states


def test_overhead_factor_scales_only_what_is_not_counted_exactly() -> None:
    base = _estimate()
    scaled = estimate_memory(
        analysis=analyze_model(get_model_config(LLAMA2_7B)),
        method=Method.LORA,
        training=TrainingSpec(),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        seq_len=1024,
        overhead_factor=1.5,
    )
    assert scaled.breakdown.weights == base.breakdown.weights
    assert scaled.breakdown.activations == pytest.approx(1.5 * base.breakdown.activations, rel=1e-6)
    assert scaled.breakdown.overhead > base.breakdown.overhead


def test_cpu_runs_have_no_cuda_overheads() -> None:
    est = estimate_memory(
        analysis=analyze_model(get_model_config(LLAMA2_7B)),
        method=Method.LORA,
        training=TrainingSpec(),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        seq_len=128,
        device="cpu",
    )
    assert est.breakdown.overhead == 0
    assert est.per_gpu_bytes == est.allocated_bytes


def test_a_405b_config_is_estimated_without_weights() -> None:
    est = _estimate(
        model="meta-llama/Llama-3.1-405B",
        method=Method.QLORA,
        seq_len=2048,
        lora=LoraSpec(r=16, target_modules="all-linear"),
        gradient_checkpointing=True,
    )
    nf4 = 405_853_388_800 * (0.5 + 1 / 64)  # 4-bit codes + uint8 absmax, about 4.1 bits
    analysis = analyze_model(get_model_config("meta-llama/Llama-3.1-405B"))
    adapters = lora_trainable_params(analysis, LoraSpec(r=16, target_modules="all-linear")) * 4
    assert nf4 < est.breakdown.weights - adapters < 1.05 * nf4
    assert est.per_gpu_bytes < 1.2 * est.breakdown.weights


def test_auto_sharding_picks_the_least_sharded_strategy_that_fits() -> None:
    analysis = analyze_model(get_model_config("meta-llama/Llama-3.1-70B"))

    def auto(gpu_memory: int) -> MemoryEstimate:
        return estimate_memory(
            analysis=analysis,
            method=Method.LORA,
            training=TrainingSpec(gradient_checkpointing=True),
            lora=LoraSpec(),
            qlora=QLoraSpec(),
            seq_len=2048,
            num_gpus=8,
            gpu_memory_bytes=gpu_memory,
        )

    assert auto(10**15).strategy == "ddp"
    sharded = auto(80 * 10**9)  # 141 GB of bf16 weights cannot be replicated on 80 GB GPUs
    assert sharded.strategy == "fsdp_zero3"
    assert sharded.per_gpu_bytes <= 80 * 10**9
