"""Compute and time of a fine-tune: FLOPs (from `flops.py`), bandwidth-bound terms, wall time.

Time per micro-step is matmul time at the efficiency (a fraction of peak reached by
compute-bound matmuls) plus the time to stream every weight through memory once per pass, with a
floor set by how fast eager PyTorch launches kernels; then the terms that are bandwidth-bound
whatever the batch: QLoRA dequantization, the optimizer step (full fine-tuning reads and writes
every state each step), gradient communication, start-up and the final save.

Why streaming adds rather than overlaps (a roofline takes the larger of the two, Williams et al.
2009): at fine-tuning micro-batches a linear layer's matmul has an arithmetic intensity of about
M FLOP per weight byte, M the tokens in the micro-batch, which is at or below the GPUs' ridge
point (peak FLOP/s over bandwidth: A100 ~150, H100 ~300, L40S ~420), and each weight is read
right before the matmul that needs it. So the effective efficiency falls as micro-batches shrink:
`mfu x compute / (compute + stream)`. This is what makes small micro-batches cost more per
token than their FLOPs say; bench/time_accuracy.py checks it against published runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from app.estimator.catalog_types import GpuSpec
from app.estimator.conventions import DTYPE_BYTES, adapter_dtype
from app.estimator.efficiency import (
    BANDWIDTH_EFFICIENCY,
    COMM_EFFICIENCY,
    COMM_OVERLAP,
    INTER_NODE_GBPS_PER_NODE,
    STARTUP_SECONDS,
    WEIGHT_LOAD_GBPS,
)
from app.estimator.errors import EstimateInputError
from app.estimator.flops import FlopsBreakdown, MatmulParams, flops_per_token, matmul_params
from app.estimator.lora import lora_targets
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import (
    MAX_GPUS_PER_NODE,
    LoraSpec,
    Method,
    Optimizer,
    QLoraSpec,
    TrainingSpec,
)
from app.estimator.workload import Workload

__all__ = [
    "FlopsBreakdown",
    "MatmulParams",
    "TimeBreakdown",
    "achieved_mfu",
    "estimate_time",
    "fit_mfu",
    "flops_per_token",
    "matmul_params",
]

ComputeDtype = Literal["bf16", "fp16", "fp32"]
GIGA = 1e9
# bitsandbytes 4-bit storage: 4 bits per weight plus one absmax per block of 64 weights, fp32,
# or with double quantization an 8-bit absmax plus an fp32 constant per 256 blocks
# (Dettmers et al. 2023, QLoRA, section 3 "Double Quantization").
NF4_BYTES = 0.5
QUANT_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256
HALF_BYTES = 2  # bf16/fp16 element

# Memory traffic of one optimizer step per trainable element, in units of the parameter dtype
# (p), the optimizer state dtype (s, per state) and fp32 temporaries. torch's multi-tensor
# AdamW (the default foreach path, not fused) runs separate kernels for weight decay, lerp of
# m, mul+addcmul of v, sqrt/div/add for the denominator and addcdiv into the parameter:
# p read+written twice, each state ~4 touches, the gradient read twice, a temporary 6 touches.
# bitsandbytes optimizers are single fused kernels: read p, g, states; write p, states.
# HF's Adafactor works on fp32 copies with ~10 elementwise passes (transformers optimization.py).
# The AdamW temporary (sqrt of v, divided, eps added, read by addcdiv: torch/optim/adam.py
# `_multi_tensor_adam`) has the dtype of the state it comes from, so bf16 under bf16_true.
_TOUCHES = {  # (param, grad, per-state, states, fp32 temporaries)
    "adamw": (4, 2, 4, 2, 6),
    "paged_adamw_32bit": (2, 1, 2, 2, 0),
    "adamw_8bit": (2, 1, 2, 2, 0),
    "paged_adamw_8bit": (2, 1, 2, 2, 0),
    "sgd": (2, 1, 0, 0, 0),
    "adafactor": (4, 1, 0, 0, 10),
}
# State element bytes where the optimizer fixes them; None: same dtype as the parameter (torch).
_STATE_BYTES: dict[str, float | None] = {
    "adamw": None,
    "paged_adamw_32bit": 4,
    "adamw_8bit": 1,
    "paged_adamw_8bit": 1,
    "sgd": None,
    "adafactor": None,
}
# Eager PyTorch spends ~5-10 us per op on the host (dispatch + launch; H. He 2022, "Making
# Deep Learning Go Brrrr From First Principles", overhead section) and an HF decoder layer's
# forward issues ~15-20 ops (norms, projections, rotary, attention, activation, residuals).
EAGER_SECONDS_PER_LAYER_PASS = 1.5e-4

# Gradient clipping (HF Trainer default max_grad_norm=1.0): one read for the norm, one
# read+write to scale.
GRAD_CLIP_TOUCHES = 3

# The LoRA branch of one adapted linear layer is memory-bound (rank r is tiny next to in/out):
# per token it reads the layer input for A (1 x in); reads the base output and the branch output
# and writes their sum (3 x out), after B wrote the branch output (1 x out); backward reads the
# output gradient for B's weight gradient and for the gradient into A (2 x out, plus 1 x out for
# the scaled copy), reads the input for A's weight gradient (1 x in) and adds the input gradient
# into the base layer's (read + write, 2 x in). peft's lora.Linear.forward; the elementwise ops
# are separate kernels in eager PyTorch. Dropout (p > 0) adds a read and a write of the input in
# forward and again of its gradient in backward.
LORA_BRANCH_TOUCHES_IN = 4
LORA_BRANCH_TOUCHES_OUT = 7
LORA_DROPOUT_TOUCHES_IN = 4


@dataclass(frozen=True)
class TimeBreakdown:
    """Wall time of a run on `num_gpus` GPUs and where it goes, in seconds."""

    compute_s: float  # matmuls at the efficiency `mfu`
    # reading every weight once per pass, not hidden behind the matmuls; or, where more, the
    # time eager PyTorch needs to launch a micro-step's kernels, less the matmuls
    weight_stream_s: float
    dequant_s: float  # QLoRA: 4-bit to bf16 before each use
    optimizer_s: float  # the optimizer step and gradient clipping
    comm_s: float  # gradient/parameter communication not hidden behind compute
    overhead_s: float  # start-up, loading the weights, saving the result
    flops: float  # executed FLOPs of the whole run, all GPUs
    mfu: float
    micro_steps: int  # per GPU
    optimizer_steps: int
    step_fixed_s: float = 0.0  # fixed seconds per micro-step learned by calibration (else 0)
    adapter_s: float = 0.0  # LoRA/QLoRA: the adapter branches' memory traffic

    @property
    def total_s(self) -> float:
        """Wall-clock seconds."""
        return (
            self.compute_s
            + self.weight_stream_s
            + self.dequant_s
            + self.optimizer_s
            + self.comm_s
            + self.overhead_s
            + self.step_fixed_s
            + self.adapter_s
        )

    @property
    def hours(self) -> float:
        """Wall-clock hours."""
        return self.total_s / 3600.0

    def as_dict(self) -> dict[str, float]:
        """The breakdown with its total, for JSON."""
        return {**asdict(self), "total_s": self.total_s}


def compute_dtype(precision: str) -> ComputeDtype:
    """The matmul dtype a precision setting runs at."""
    if precision == "fp32":
        return "fp32"
    return "fp16" if precision == "fp16_mixed" else "bf16"


def param_bytes(precision: str) -> int:
    """Bytes per stored trainable parameter: fp32 under mixed precision and fp32, else 2."""
    return 2 if precision == "bf16_true" else 4


def weight_bytes(method: Method, precision: str, qlora: QLoraSpec) -> tuple[float, float]:
    """Bytes per weight as stored and as streamed into matmuls.

    Full fine-tuning keeps the weights in the trained dtype; LoRA keeps the frozen base in 16
    bits (fp32 only under `fp32`); QLoRA stores 4-bit weights and streams their 16-bit copy.
    """
    half_or_fp32 = 4 if precision == "fp32" else HALF_BYTES
    if method is Method.FULL:
        return param_bytes(precision), param_bytes(precision)
    if method is Method.QLORA:
        return quantized_bytes_per_weight(qlora), half_or_fp32
    return half_or_fp32, half_or_fp32


def optimizer_bytes_per_param(
    optimizer: Optimizer | str, precision: str, *, param_dtype_bytes: int | None = None
) -> float:
    """Bytes read and written per trainable parameter by one optimizer step (clipping included).

    `param_dtype_bytes` overrides the trained parameters' element size where the convention
    fixes it (LoRA adapters are fp32 whatever the precision: app/estimator/conventions.py).
    """
    pb = param_bytes(precision) if param_dtype_bytes is None else param_dtype_bytes
    p_touch, g_touch, s_touch, n_states, temps = _TOUCHES[optimizer]
    state = _STATE_BYTES[optimizer]
    sb = pb if state is None else state
    temp_bytes = 4 if optimizer == "adafactor" else sb
    return (
        p_touch * pb
        + (g_touch + GRAD_CLIP_TOUCHES) * pb
        + n_states * s_touch * sb
        + temps * temp_bytes
    )


def quantized_bytes_per_weight(qlora: QLoraSpec) -> float:
    """Stored bytes per 4-bit weight, quantization constants included."""
    if qlora.double_quant:
        return NF4_BYTES + 1.0 / QUANT_BLOCK + 4.0 / (QUANT_BLOCK * DOUBLE_QUANT_BLOCK)
    return NF4_BYTES + 4.0 / QUANT_BLOCK


def adapter_bytes_per_token(
    analysis: ModelAnalysis, lora: LoraSpec, *, activation_bytes: int
) -> float:
    """Bytes the LoRA branches move per token in one forward and backward pass."""
    touches_in = LORA_BRANCH_TOUCHES_IN + (LORA_DROPOUT_TOUCHES_IN if lora.dropout > 0 else 0)
    elements = sum(
        touches_in * fan_in + LORA_BRANCH_TOUCHES_OUT * fan_out
        for _, fan_in, fan_out in lora_targets(analysis, lora)
    )
    return elements * activation_bytes


def _comm_kind(strategy: str) -> str:
    text = strategy.lower()
    for kind in ("zero3", "zero2", "ddp"):
        if kind in text:
            return kind
    return "ddp"


def _bus_bandwidth(gpu: GpuSpec, num_gpus: int) -> float:
    """Bytes/s one GPU moves in a collective: one direction of its link, NCCL efficiency."""
    link = gpu.interconnect_gbps / 2.0
    if num_gpus > MAX_GPUS_PER_NODE:
        link = min(link, INTER_NODE_GBPS_PER_NODE)
    return link * GIGA * COMM_EFFICIENCY


def estimate_time(
    *,
    analysis: ModelAnalysis,
    method: Method | str,
    training: TrainingSpec,
    qlora: QLoraSpec,
    workload: Workload,
    lora_trainable: int,
    gpu: GpuSpec,
    num_gpus: int,
    strategy: str,
    mfu: float,
    artifact_bytes: float = 0.0,
    lora: LoraSpec | None = None,
    run_overhead_s: float | None = None,
    step_s: float = 0.0,
) -> TimeBreakdown:
    """Wall time of the run described by `workload` on `num_gpus` x `gpu` at efficiency `mfu`.

    `run_overhead_s` and `step_s` come from calibration: the measured seconds outside the
    training loop replace the modelled start-up, loading and saving, and `step_s` is added to
    every micro-step.
    """
    method = Method(method)
    peft = method is not Method.FULL
    mm = matmul_params(analysis)
    dtype = compute_dtype(training.precision)
    peak = gpu.peak_flops(dtype)
    if mfu <= 0:
        raise ValueError(f"efficiency must be positive, got {mfu}")
    if peak <= 0:
        raise EstimateInputError(
            f"{gpu.id} has no {dtype} throughput in the catalog; choose another "
            "training.precision or GPU",
            field="training.precision",
        )
    bandwidth = gpu.memory_bandwidth_gbps * GIGA * BANDWIDTH_EFFICIENCY
    pb = (
        DTYPE_BYTES[adapter_dtype(precision=training.precision)]
        if peft
        else param_bytes(training.precision)
    )
    trainable = float(lora_trainable) if peft else float(analysis.total_params)

    flops = flops_per_token(
        analysis=analysis,
        method=method,
        training=training,
        lora_trainable=lora_trainable,
        seq_len=workload.padded_len,
        lora=lora,
    )
    micro_steps = workload.micro_steps_per_gpu(num_gpus)
    steps = workload.optimizer_steps(num_gpus)
    tokens_per_micro = workload.tokens_per_micro_batch
    compute_micro = tokens_per_micro * flops.total / (peak * mfu)

    # Every weight is streamed once per pass (forward, input-gradient, recompute); the
    # trained ones also get a gradient written. QLoRA streams the dequantized bf16 copy.
    passes = 3 if training.gradient_checkpointing else 2
    stored_bytes, stream_bytes = weight_bytes(method, training.precision, qlora)
    stream_micro = (passes * mm.total * stream_bytes + trainable * pb) / bandwidth
    # eager PyTorch cannot launch kernels faster than this, however small they are; backward
    # issues about twice the kernels of forward
    launch_micro = (passes + 1) * analysis.num_layers * EAGER_SECONDS_PER_LAYER_PASS
    body_micro = max(compute_micro + stream_micro, launch_micro)
    dequant_micro = 0.0
    if method is Method.QLORA:
        per_weight = quantized_bytes_per_weight(qlora) + HALF_BYTES
        dequant_micro = passes * mm.quantizable * per_weight / bandwidth

    shards = num_gpus if _comm_kind(strategy) in {"zero2", "zero3"} and num_gpus > 1 else 1
    opt_bytes = optimizer_bytes_per_param(
        training.optimizer, training.precision, param_dtype_bytes=pb
    )
    optimizer_step = trainable * opt_bytes / shards / bandwidth

    comm_step = comm_micro = 0.0
    if num_gpus > 1:
        share = (num_gpus - 1) / num_gpus
        bus = _bus_bandwidth(gpu, num_gpus)
        if _comm_kind(strategy) == "zero3":
            # all-gather the weights for forward and again for backward, reduce-scatter grads
            gathered = 2 * analysis.total_params * stored_bytes
            comm_micro = share * (gathered + trainable * pb) / bus
        else:
            comm_step = 2 * share * trainable * pb / bus
    visible = 1.0 - COMM_OVERLAP

    adapter_micro = 0.0
    if peft and lora is not None:
        per_token = adapter_bytes_per_token(
            analysis, lora, activation_bytes=4 if training.precision == "fp32" else HALF_BYTES
        )
        adapter_micro = tokens_per_micro * per_token / bandwidth

    load_bytes = analysis.total_params * HALF_BYTES  # checkpoints are published in 16-bit
    overhead = STARTUP_SECONDS + (load_bytes + artifact_bytes) / (WEIGHT_LOAD_GBPS * GIGA)
    if run_overhead_s is not None:
        overhead = run_overhead_s
    return TimeBreakdown(
        compute_s=micro_steps * compute_micro,
        weight_stream_s=micro_steps * (body_micro - compute_micro),
        dequant_s=micro_steps * dequant_micro,
        optimizer_s=steps * optimizer_step,
        comm_s=visible * (steps * comm_step + micro_steps * comm_micro),
        overhead_s=overhead,
        flops=workload.processed_tokens * flops.total,
        mfu=mfu,
        micro_steps=micro_steps,
        optimizer_steps=steps,
        step_fixed_s=micro_steps * step_s,
        adapter_s=micro_steps * adapter_micro,
    )


def fit_mfu(*, breakdown: TimeBreakdown, measured_seconds: float) -> float | None:
    """The efficiency that makes the predicted time equal a measured one (None if impossible).

    Everything but the matmul term is taken as modelled; the matmul term absorbs the rest.
    This is what calibration fits per (GPU, method) from finished jobs.
    """
    fixed = (
        breakdown.weight_stream_s
        + breakdown.dequant_s
        + breakdown.optimizer_s
        + breakdown.comm_s
        + breakdown.overhead_s
        + breakdown.step_fixed_s
        + breakdown.adapter_s
    )
    remaining = measured_seconds - fixed
    if remaining <= 0 or breakdown.compute_s <= 0:
        return None
    return breakdown.mfu * breakdown.compute_s / remaining


def achieved_mfu(*, flops: float, seconds: float, peak_flops: float, num_gpus: int = 1) -> float:
    """Fraction of peak reached by `flops` executed in `seconds` on `num_gpus` devices."""
    if seconds <= 0 or peak_flops <= 0 or num_gpus < 1:
        raise ValueError("seconds, peak_flops and num_gpus must be positive")
    return flops / (seconds * peak_flops * num_gpus)
