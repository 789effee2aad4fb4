"""Compute and time of a fine-tune: FLOPs (from `flops.py`), bandwidth-bound terms, wall time.

A step has two sides. The device's: matmul time at an efficiency that grows with the work per
matmul (`efficiency.matmul_efficiency`), the time to stream every weight through memory once per
pass, and the terms that are bandwidth-bound whatever the batch (QLoRA dequantization, the LoRA
branches, the optimizer step). The host's: the time eager PyTorch needs to issue the step's
operations (`floor.py`), about fixed per layer whatever the tokens. On a GPU the two overlap
(the host queues kernels ahead), so a step costs about the longer of the two; on the CPU they
add. Then gradient communication, start-up and the final save.

Why streaming adds rather than overlaps the matmuls (a roofline takes the larger of the two,
Williams et al. 2009): at fine-tuning micro-batches a linear layer's matmul has an arithmetic
intensity of about M FLOP per weight byte, M the tokens in the micro-batch, which is at or below
the GPUs' ridge point (peak FLOP/s over bandwidth: A100 ~150, H100 ~300, L40S ~420), and each
weight is read right before the matmul that needs it. bench/time_accuracy.py checks the whole
against published runs and bench/gpu_rescore.py against tunecost's own GPU measurements.
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
    MATMUL_HALF_WORK,
    MATMUL_HALF_WORK_CPU,
    WEIGHT_LOAD_GBPS,
    matmul_efficiency,
    startup_seconds,
)
from app.estimator.errors import EstimateInputError
from app.estimator.floor import (
    HOST_S_PER_LAYER,
    OVERLAP_POWER_GPU,
    host_floor,
    overlap_power,
    overlapped,
)
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
from app.estimator.speed import DeviceSpeed
from app.estimator.states import quantizable_layers
from app.estimator.workload import Workload

__all__ = [
    "DeviceSpeed",
    "FlopsBreakdown",
    "MatmulParams",
    "TimeBreakdown",
    "achieved_mfu",
    "estimate_time",
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
# bitsandbytes' 4-bit dequantization moves its bytes (4-bit codes and absmax in, 16-bit weight
# out) far below the memory bandwidth: per weight and micro-step QLoRA costs ~11 ps more than
# LoRA on an H200 (Llama-3-8B, 2048 tokens a step: 245 ms against 167, bnb 0.50,
# bench/results/gpu_validate-2026-11-30-steady-8b.txt) and ~15-20 ps on an A100 (LitGPT
# resource tables, Llama 2 7B and 13B, bnb 0.41: 221 / 383 ms against 142 / 191 per
# iteration), i.e. 10-20% of the rate the other bandwidth-bound terms reach.
DEQUANT_BANDWIDTH_SHARE = 0.35

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
# The elementwise work of a decoder layer, forward and backward, in bytes per token of 16-bit
# activations: RMSNorm upcasts to fp32 and back (~32 bytes per hidden element forward, about
# twice that backward, two norms a layer), rotary embedding on queries and keys (slices,
# negation, concatenation, two products and a sum), the attention kernel's reads and writes,
# the transposes to and from heads and two residual sums: ~330 bytes per hidden element
# (transformers LlamaDecoderLayer, counted op by op); the gated MLP's activation and product
# ~30 bytes per intermediate element. Memory-bound and per token, next to matmuls that grow
# with the width squared: why a narrow model reaches less of its peak (H200: Llama-3.2-1B
# LoRA at 8192 tokens a step ~0.3 of peak end to end, Llama-3-8B at 2048 tokens ~0.41).
ELEMENTWISE_BYTES_PER_HIDDEN = 165
ELEMENTWISE_BYTES_PER_INTERMEDIATE = 15
# The loss over the vocabulary: 16-bit logits written and read, the fp32 upcast, log-softmax
# forward and backward, the cast of its gradient back (transformers ForCausalLMLoss):
# ~34 bytes per vocabulary entry per token.
LOSS_BYTES_PER_VOCAB = 34
LORA_BRANCH_TOUCHES_OUT = 7
LORA_DROPOUT_TOUCHES_IN = 4


@dataclass(frozen=True)
class TimeBreakdown:
    """Wall time of a run on `num_gpus` GPUs and where it goes, in seconds.

    The device terms (compute to adapter) and the host's `host_s` overlap on a GPU: `overlap_s`
    (never positive) is the time they ran at once, so every term sums to `total_s`.
    """

    compute_s: float  # matmuls at the efficiency `mfu`
    weight_stream_s: float  # reading every weight once per pass, not hidden behind the matmuls
    dequant_s: float  # QLoRA: 4-bit to bf16 before each use
    optimizer_s: float  # the optimizer step and gradient clipping
    comm_s: float  # gradient/parameter communication not hidden behind compute
    overhead_s: float  # start-up, loading the weights, saving the result
    flops: float  # executed FLOPs of the whole run, all GPUs
    mfu: float  # the matmuls' efficiency at this run's work per matmul
    micro_steps: int  # per GPU
    optimizer_steps: int
    adapter_s: float = 0.0  # LoRA/QLoRA: the adapter branches' memory traffic
    host_s: float = 0.0  # the host issuing every step's operations (the per-step floor)
    overlap_s: float = 0.0  # host and device at work at once (<= 0)
    mfu_peak: float = 0.0  # the efficiency of large matmuls that `mfu` falls from
    elementwise_s: float = 0.0  # norms, rotary, activations, residuals and the loss (per token)
    host_scale: float = 1.0  # calibrated factor on the modelled floor, included in host_s
    overlap_power: float = OVERLAP_POWER_GPU  # how host and device time combine (floor.py)
    paging_s: float = 0.0  # paged optimizer states moved to host memory and back (host link)

    @property
    def device_s(self) -> float:
        """Seconds the device is busy with the training loop (communication apart)."""
        return (
            self.compute_s
            + self.weight_stream_s
            + self.dequant_s
            + self.optimizer_s
            + self.adapter_s
            + self.elementwise_s
        )

    @property
    def loop_s(self) -> float:
        """The training loop: device and host overlapped, plus visible communication and the
        paging of optimizer states."""
        return self.device_s + self.host_s + self.overlap_s + self.comm_s + self.paging_s

    @property
    def total_s(self) -> float:
        """Wall-clock seconds."""
        return self.loop_s + self.overhead_s

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


def elementwise_bytes_per_token(analysis: ModelAnalysis, *, activation_bytes: int) -> float:
    """Bytes the elementwise operations of one forward and backward pass move per token."""
    layers = analysis.num_layers + analysis.num_decoder_layers
    per_layer = (
        ELEMENTWISE_BYTES_PER_HIDDEN * analysis.hidden_size
        + ELEMENTWISE_BYTES_PER_INTERMEDIATE * analysis.intermediate_size
    )
    loss = LOSS_BYTES_PER_VOCAB * analysis.vocab_size
    return (layers * per_layer * activation_bytes / HALF_BYTES) + loss


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
    host_scale: float = 1.0,
    speed: DeviceSpeed | None = None,
    paging_s_per_step: float = 0.0,
) -> TimeBreakdown:
    """Wall time of the run described by `workload` on `num_gpus` x `gpu`.

    `mfu` is the efficiency of large matmuls; this run's matmuls reach
    `matmul_efficiency(mfu, ...)` of it at their size. `run_overhead_s` and `host_scale` come
    from calibration: the measured seconds outside the training loop replace the modelled
    start-up, loading and saving, and `host_scale` multiplies the modelled per-step floor.
    `speed`, a worker's measurement of its device, replaces the catalog's peak, bandwidth and
    host floor. `paging_s_per_step`: what a paged optimizer's states take to leave the GPU and
    come back, once per optimizer step.
    """
    method = Method(method)
    peft = method is not Method.FULL
    mm = matmul_params(analysis)
    dtype = compute_dtype(training.precision)
    peak = gpu.peak_flops(dtype) if speed is None else speed.matmul_flops
    if mfu <= 0:
        raise ValueError(f"efficiency must be positive, got {mfu}")
    if host_scale <= 0:
        raise ValueError(f"host_scale must be positive, got {host_scale}")
    if peak <= 0:
        raise EstimateInputError(
            f"{gpu.id} has no {dtype} throughput in the catalog; choose another "
            "training.precision or GPU",
            field="training.precision",
        )
    bandwidth = (
        gpu.memory_bandwidth_gbps * GIGA * BANDWIDTH_EFFICIENCY
        if speed is None
        else speed.memory_bytes_per_s
    )
    pb = (
        DTYPE_BYTES[
            adapter_dtype(precision=training.precision, adapters_fp32=training.adapters_fp32)
        ]
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
    efficiency = matmul_efficiency(
        mfu,
        tokens=tokens_per_micro,
        width=analysis.hidden_size,
        half_work=MATMUL_HALF_WORK_CPU if gpu.is_cpu else MATMUL_HALF_WORK,
    )
    compute_micro = tokens_per_micro * flops.total / (peak * efficiency)

    # Every weight is streamed once per pass (forward, input-gradient, recompute); the
    # trained ones also get a gradient written. QLoRA streams the dequantized bf16 copy.
    passes = 3 if training.checkpointing else 2
    stored_bytes, stream_bytes = weight_bytes(method, training.precision, qlora)
    stream_micro = (passes * mm.total * stream_bytes + trainable * pb) / bandwidth
    dequant_micro = 0.0
    if method is Method.QLORA:
        per_weight = quantized_bytes_per_weight(qlora) + HALF_BYTES
        dequant_micro = passes * mm.quantizable * per_weight / (bandwidth * DEQUANT_BANDWIDTH_SHARE)

    shards = num_gpus if _comm_kind(strategy) in {"zero2", "zero3"} and num_gpus > 1 else 1
    opt_bytes = optimizer_bytes_per_param(
        training.optimizer_name, training.precision, param_dtype_bytes=pb
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
    adapters = 0
    if peft and lora is not None:
        adapters = len(lora_targets(analysis, lora))
        per_token = adapter_bytes_per_token(
            analysis, lora, activation_bytes=4 if training.precision == "fp32" else HALF_BYTES
        )
        adapter_micro = tokens_per_micro * per_token / bandwidth

    activation_bytes = 4 if training.precision == "fp32" else HALF_BYTES
    recompute = 4.0 / 3.0 if training.checkpointing else 1.0
    elementwise_micro = (
        tokens_per_micro
        * recompute
        * elementwise_bytes_per_token(analysis, activation_bytes=activation_bytes)
        / bandwidth
    )
    host = host_floor(
        num_layers=analysis.num_layers + analysis.num_decoder_layers,
        adapters=adapters,
        four_bit_layers=len(quantizable_layers(analysis)) if method is Method.QLORA else 0,
        checkpointing=training.checkpointing,
        seconds_per_layer=HOST_S_PER_LAYER if speed is None else speed.host_s_per_layer,
    )
    host_s = host_scale * (micro_steps * host.micro_s + steps * host.optimizer_s)
    device_s = (
        micro_steps
        * (compute_micro + stream_micro + dequant_micro + adapter_micro + elementwise_micro)
        + steps * optimizer_step
    )
    power = overlap_power(is_cpu=gpu.is_cpu)
    busy = overlapped(host_s, device_s, power)

    load_bytes = analysis.total_params * HALF_BYTES  # checkpoints are published in 16-bit
    overhead = startup_seconds(gpu) + (load_bytes + artifact_bytes) / (WEIGHT_LOAD_GBPS * GIGA)
    if run_overhead_s is not None:
        overhead = run_overhead_s
    return TimeBreakdown(
        compute_s=micro_steps * compute_micro,
        weight_stream_s=micro_steps * stream_micro,
        dequant_s=micro_steps * dequant_micro,
        optimizer_s=steps * optimizer_step,
        comm_s=visible * (steps * comm_step + micro_steps * comm_micro),
        overhead_s=overhead,
        flops=workload.processed_tokens * flops.total,
        mfu=efficiency,
        micro_steps=micro_steps,
        optimizer_steps=steps,
        adapter_s=micro_steps * adapter_micro,
        host_s=host_s,
        overlap_s=busy - host_s - device_s,
        mfu_peak=mfu,
        elementwise_s=micro_steps * elementwise_micro,
        host_scale=host_scale,
        overlap_power=power,
        paging_s=steps * paging_s_per_step,
    )


def achieved_mfu(*, flops: float, seconds: float, peak_flops: float, num_gpus: int = 1) -> float:
    """Fraction of peak reached by `flops` executed in `seconds` on `num_gpus` devices."""
    if seconds <= 0 or peak_flops <= 0 or num_gpus < 1:
        raise ValueError("seconds, peak_flops and num_gpus must be positive")
    return flops / (seconds * peak_flops * num_gpus)
