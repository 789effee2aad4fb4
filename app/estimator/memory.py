"""Peak GPU memory of one training step, per GPU, with a named breakdown.

The peak is the larger of two moments of a steady-state step (optimizer states exist, gradients
were freed by `zero_grad(set_to_none=True)`):

* **backward start**: weights, optimizer states, every saved activation, the logits and the
  loss's fp32 gradients (with checkpointing, also one recomputed layer), and the first
  gradients (with gradient accumulation, all gradients);
* **optimizer step**: weights, all gradients, optimizer states and the step's temporaries.

Weights/gradients/optimizer bytes are exact (`states.py`), activations are replayed from the
model's own forward pass (`activations.py`). What torch's allocator adds (reserved over
allocated) and what lives outside it (CUDA context, NCCL buffers, paged optimizer states) are
named constants below. `allocated_bytes` is what `torch.cuda.max_memory_allocated` reports,
`reserved_bytes` what `max_memory_reserved` reports, and `per_gpu_bytes` what must fit in the
GPU's memory (what nvidia-smi shows), the figure to compare with a GPU's capacity.

Runs are modelled as the worker trains: transformers models with `use_cache=False`, and the
dtypes of `conventions` (fp32 LoRA adapters; a 16-bit frozen base under `bf16_true` and
`*_mixed`; QLoRA's embeddings, norms and lm_head left unquantized in that dtype, not upcast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Literal

from app.estimator.activations import (
    ActivationEstimate,
    DtypePolicy,
    LoraLayout,
    dtype_policy,
    estimate_activations,
)
from app.estimator.lora import lora_layout
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import LoraSpec, Method, QLoraSpec, TrainingSpec
from app.estimator.states import StateBytes, quantizable_layers, state_bytes

__all__ = ["MemoryBreakdown", "MemoryEstimate", "StateBytes", "estimate_memory", "state_bytes"]

Device = Literal["cuda", "cpu"]
STRATEGIES = ("single", "ddp", "fsdp_zero2", "fsdp_zero3")
# Runs the worker does on several GPUs only as DDP, so the planner plans them so: QLoRA (FSDP
# would have to shard bitsandbytes' packed 4-bit weights: possible with a bnb quant-storage
# dtype, not built) and fp16 mixed precision (its loss scaler would have to agree on overflow
# across the shards: torch's ShardedGradScaler, not wired to FSDP2 here).
REPLICATED_STRATEGY = "ddp"
GiB = 1024**3
MiB = 1024**2

# CUDA context, kernel images and library handles (cuBLAS, cuDNN) live outside torch's
# allocator. A process that has only run `torch.ones(1).cuda()` and one matmul shows about
# 0.4-0.6 GiB in nvidia-smi on A100/H100 with CUDA 12 (PyTorch "CUDA semantics" docs: the
# context is not reported by memory_allocated/reserved). Expected / low / high:
CUDA_CONTEXT_BYTES = 512 * MiB
CUDA_CONTEXT_LOW_BYTES = 300 * MiB
CUDA_CONTEXT_HIGH_BYTES = 1 * GiB
# Reserved over allocated at the peak: the caching allocator rounds blocks (512 B, 2 MiB
# segments for small blocks, 20 MiB for large ones) and keeps freed blocks cached, which
# fragments when sequence lengths vary between steps. Engineering estimate from
# torch.cuda.memory_stats of fine-tuning loops (PyTorch "Understanding CUDA memory usage"):
# a few percent with fixed shapes, 10-25% with variable-length batches.
ALLOCATOR_SLACK = 0.08
ALLOCATOR_SLACK_LOW = 0.02
ALLOCATOR_SLACK_HIGH = 0.25
# NCCL communicators allocate their buffers outside torch's allocator: NCCL_BUFFSIZE 4 MiB per
# channel and peer, plus proxy buffers; a few hundred MiB per GPU for 8-GPU rings (NCCL docs).
NCCL_BUFFER_BYTES = 384 * MiB
# Other training stacks keep different intermediates than the transformers code replayed here
# (e.g. bitsandbytes < 0.45 also kept the input of every 4-bit matmul; LitGPT chunks the loss).
# Upper bound of that spread, applied to activations in `high_bytes`.
ACTIVATION_HIGH_MARGIN = 0.25
# FSDP keeps this many transformer blocks unsharded at once (the current one + the prefetched
# one; torch FSDP `forward_prefetch`/`backward_prefetch` defaults).
FSDP_UNSHARDED_BLOCKS = 2


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU at the peak moment, by what holds them (they sum to `per_gpu_bytes`)."""

    weights: int  # model weights as stored (and autocast's 16-bit copies at backward start)
    gradients: int
    optimizer_states: int  # states, plus the optimizer step's temporaries at that moment
    master_weights: int  # fp32 copies of trainable weights under *_mixed
    activations: int  # saved for backward (and one recomputed layer with checkpointing)
    logits: int  # logits, fp32 log-softmax kept for the loss, and its fp32 gradients
    overhead: int  # allocator slack, CUDA context, NCCL buffers, paged optimizer memory

    def as_dict(self) -> dict[str, int]:
        """The components by name."""
        return asdict(self)

    @property
    def total(self) -> int:
        """Sum of the components."""
        return sum(self.as_dict().values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory of a run: expected, low and high bytes, and the breakdown."""

    per_gpu_bytes: int
    low_bytes: int
    high_bytes: int
    strategy: str
    breakdown: MemoryBreakdown
    allocated_bytes: int  # expected torch.cuda.max_memory_allocated
    reserved_bytes: int  # expected torch.cuda.max_memory_reserved
    peak_phase: str  # "backward_start", "optimizer_step" or "forward_end"
    num_gpus: int
    activations: ActivationEstimate
    # bitsandbytes' paged optimizer states at the peak: CUDA unified memory that the driver
    # evicts to host memory when the GPU runs short, so they need not fit beside the rest
    pageable_bytes: int = 0

    @property
    def must_fit_bytes(self) -> int:
        """What must fit in the GPU's memory: the peak less what may page out to the host."""
        return self.per_gpu_bytes - self.pageable_bytes


@dataclass(frozen=True)
class _PerGpu:
    """State bytes on one GPU after sharding, split by when they are alive."""

    weights: int  # always
    weights_backward: int  # extra at backward start (autocast copies, FSDP unsharded blocks)
    master: int
    grads_step: int  # at the optimizer step
    grads_backward: int  # already alive at backward start (DDP buckets, accumulation)
    head_grad: int
    states: int
    step_transient: int
    paged: int  # part of `states` that bitsandbytes pages outside torch's allocator


def replicated_only(*, method: Method, precision: str | None) -> bool:
    """True for runs the worker shards by DDP only (see REPLICATED_STRATEGY)."""
    return method is Method.QLORA or precision == "fp16_mixed"


def resolve_strategy(
    *, method: Method, num_gpus: int, sharding: str, precision: str | None = None
) -> str:
    """single on one GPU; else the asked strategy, or by default FSDP/ZeRO-3 for full
    fine-tuning (it shards everything) and DDP for adapters (the frozen base is replicated).
    QLoRA and fp16 mixed precision are DDP whatever was asked (REPLICATED_STRATEGY)."""
    if num_gpus <= 1:
        return "single"
    if replicated_only(method=method, precision=precision):
        return REPLICATED_STRATEGY
    if sharding != "auto":
        return sharding
    return "fsdp_zero3" if method is Method.FULL else "ddp"


def _shard(
    s: StateBytes, a: ModelAnalysis, *, strategy: str, n: int, accumulate: bool, compute_bytes: int
) -> _PerGpu:
    opt = s.optimizer
    paged = opt.states if opt.paged else 0
    if strategy in ("single", "ddp"):
        # DDP (gradient_as_bucket_view=False, the default) keeps gradient buckets as big as
        # the gradients for the whole run
        buckets = s.gradients if strategy == "ddp" else 0
        return _PerGpu(
            s.weights,
            s.compute_copies,
            s.master_weights,
            s.gradients + buckets,
            buckets + (s.gradients if accumulate else 0),
            s.head_gradient,
            opt.states,
            opt.step_transient,
            paged,
        )
    root = a.params_by_kind.get("embeddings", 0) + a.params_by_kind.get("lm_head", 0)
    block = (a.total_params - root) / max(a.num_layers + a.num_decoder_layers, 1)
    per_param = s.weights / a.total_params if s.weights else compute_bytes
    if strategy == "fsdp_zero2":  # parameters stay unsharded from forward to backward
        unsharded = a.total_params * per_param
    else:  # fsdp_zero3: only the blocks being computed, plus the root (embeddings, head)
        unsharded = (FSDP_UNSHARDED_BLOCKS * block + root) * per_param
    grads = s.gradients // n
    return _PerGpu(
        weights=s.weights // n,
        weights_backward=round(unsharded),
        master=s.master_weights // n,
        grads_step=grads,
        grads_backward=grads if accumulate else 0,
        head_grad=s.head_gradient,
        states=opt.states // n,
        step_transient=opt.step_transient // n,
        paged=paged // n,
    )


def _phases(
    g: _PerGpu,
    act: ActivationEstimate,
    *,
    held_logits: bool,
    transient: bool,
    act_scale: float,
    previous_held: int = 0,
) -> tuple[str, dict[str, int]]:
    """Components at backward start and at the optimizer step (and, when the last step's
    graph outlives its backward, at the end of the next forward); returns the largest."""
    body = round((act.saved_bytes - act.loss_saved_bytes) * act_scale)
    held = act.logits_bytes if held_logits else 0
    loss_first = act.loss_saved_bytes + act.logits_backward_bytes  # log-softmax backward
    head_next = act.logits_bytes + g.head_grad  # then the logits' grad and the head's grad
    head_first = loss_first >= head_next
    backward = {
        "weights": g.weights + g.weights_backward,
        "gradients": g.grads_backward + (0 if head_first else g.head_grad),
        "optimizer_states": g.states,
        "master_weights": g.master,
        "activations": body,
        "logits": held + (loss_first if head_first else act.logits_bytes),
    }
    if act.checkpointed:  # later: every checkpoint plus one recomputed layer
        recompute = dict(
            backward,
            activations=body + round(act.layer_bytes * act_scale),
            gradients=g.grads_backward + g.head_grad,
            logits=0,
        )
        if sum(recompute.values()) > sum(backward.values()):
            backward = recompute
    phase = "backward_start"
    if previous_held:  # forward done, the last step's graph (and its logits or loss) still bound
        forward_end = dict(
            backward,
            gradients=g.grads_backward,
            activations=body + round(previous_held * act_scale),
            logits=held + act.loss_saved_bytes,
        )
        if sum(forward_end.values()) > sum(backward.values()):
            phase, backward = "forward_end", forward_end
    step = {
        "weights": g.weights,
        "gradients": g.grads_step,
        "optimizer_states": g.states + (g.step_transient if transient else 0),
        "master_weights": g.master,
        "activations": 0,
        "logits": 0,
    }
    if sum(step.values()) > sum(backward.values()):
        return "optimizer_step", step
    return phase, backward


def estimate_memory(
    *,
    analysis: ModelAnalysis,
    method: Method,
    training: TrainingSpec,
    lora: LoraSpec,
    qlora: QLoraSpec,
    seq_len: int,
    num_gpus: int = 1,
    sharding: str = "auto",
    overhead_factor: float = 1.0,
    device: Device = "cuda",
    bnb_keeps_4bit_input: bool = False,
    gpu_memory_bytes: int | None = None,
    adapters_fp32: bool | None = None,
    loop_keeps_last_graph: bool = False,
) -> MemoryEstimate:
    """Peak memory per GPU of fine-tuning `analysis` with `method` on `num_gpus` GPUs.

    With `sharding="auto"` on several GPUs and `gpu_memory_bytes` given, the least sharded
    strategy that fits is chosen (DDP, then FSDP/ZeRO-2 for full fine-tuning, then ZeRO-3);
    without it, ZeRO-3 for full fine-tuning and DDP for adapters.

    `seq_len` is the padded length of the longest micro-batch. `overhead_factor` scales the
    parts that are not exact counts (activations, logits, overhead): the calibration hook.
    `bnb_keeps_4bit_input` models bitsandbytes before 0.43.2, whose 4-bit matmul kept its input
    for backward (removed by bitsandbytes PR #1270, July 2024); current versions do not.
    `loop_keeps_last_graph` models a training loop whose variables keep the last step's outputs
    (hence its autograd graph) until the next forward returns (LitGPT's `fit` rebinds `logits`
    only then): with `bnb_keeps_4bit_input`, the last step's 4-bit matmul inputs, held as ctx
    attributes of that graph, are alive at the end of the next forward.
    `adapters_fp32` overrides `training.adapter_dtype` (False models stacks that keep LoRA
    adapters in 16 bits under `bf16_true`, such as LitGPT); the worker follows the training spec
    (peft's fp32 unless `adapter_dtype` is bf16).
    Results are cached: the same question twice costs a dict lookup."""
    targets = lora.target_modules
    lora_key = (
        lora.r,
        lora.alpha,
        lora.dropout,
        targets if isinstance(targets, str) else tuple(targets),
        tuple(lora.modules_to_save),
    )
    if adapters_fp32 is None:
        adapters_fp32 = training.adapters_fp32
    candidates = [sharding]
    if sharding == "auto" and num_gpus > 1 and gpu_memory_bytes is not None:
        full = method is Method.FULL
        candidates = ["ddp", "fsdp_zero2", "fsdp_zero3"] if full else ["ddp", "fsdp_zero3"]
        if replicated_only(method=method, precision=training.precision):
            candidates = [REPLICATED_STRATEGY]
    for strategy in candidates:
        estimate = _estimate_cached(
            analysis,
            method,
            training,
            lora_key,
            qlora,
            seq_len,
            num_gpus,
            strategy,
            overhead_factor,
            device,
            bnb_keeps_4bit_input,
            adapters_fp32,
            loop_keeps_last_graph,
        )
        if gpu_memory_bytes is None or estimate.per_gpu_bytes <= gpu_memory_bytes:
            break
    return estimate


@lru_cache(maxsize=4096)
def _estimate_cached(
    analysis: ModelAnalysis,
    method: Method,
    training: TrainingSpec,
    lora_key: tuple[Any, ...],
    qlora: QLoraSpec,
    seq_len: int,
    num_gpus: int,
    sharding: str,
    overhead_factor: float,
    device: Device,
    bnb_keeps_4bit_input: bool,
    adapters_fp32: bool,
    loop_keeps_last_graph: bool,
) -> MemoryEstimate:
    r, alpha, dropout, targets, to_save = lora_key
    lora = LoraSpec(
        r=r,
        alpha=alpha,
        dropout=dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        modules_to_save=list(to_save),
    )
    full = method is Method.FULL
    strategy = resolve_strategy(
        method=method, num_gpus=num_gpus, sharding=sharding, precision=training.precision
    )
    if not full and strategy == "fsdp_zero2":
        strategy = "fsdp_zero3"  # adapters: sharding only helps by sharding the frozen base
    states = state_bytes(
        analysis=analysis,
        method=method,
        precision=training.precision,
        optimizer=training.optimizer_name,
        lora=lora,
        qlora=qlora,
        adapters_fp32=adapters_fp32,
    )
    policy: DtypePolicy = dtype_policy(
        full=full, precision=training.precision, adapters_fp32=adapters_fp32
    )
    layout = LoraLayout() if full else lora_layout(analysis, lora)
    act = estimate_activations(
        analysis=analysis,
        policy=policy,
        lora=layout,
        full=full,
        attention=training.attention,
        gradient_checkpointing=training.checkpointing,
        micro_batch_size=training.micro_batch_size,
        seq_len=seq_len,
        padded=training.micro_batch_size > 1 and not training.packing,
        device=device,
        quantized_keeps_input=bnb_keeps_4bit_input and method is Method.QLORA,
    )
    per_gpu = _shard(
        states,
        analysis,
        strategy=strategy,
        n=max(num_gpus, 1),
        accumulate=training.gradient_accumulation_steps > 1,
        compute_bytes=policy.compute,
    )
    if method is Method.QLORA:  # bnb dequantizes a whole weight for each 4-bit matmul
        largest = max((i * o for _, i, o in quantizable_layers(analysis)), default=0)
        per_gpu = replace(
            per_gpu, weights_backward=per_gpu.weights_backward + largest * policy.compute
        )
    cuda = device == "cuda"
    nccl = NCCL_BUFFER_BYTES if cuda and num_gpus > 1 else 0

    def total(
        *, slack: float, context: int, act_scale: float, held: bool, transient: bool
    ) -> tuple[str, MemoryBreakdown, int, int, int]:
        phase, parts = _phases(
            per_gpu,
            act,
            held_logits=held,
            transient=transient,
            act_scale=act_scale * overhead_factor,
            previous_held=act.held_bytes if loop_keeps_last_graph else 0,
        )
        parts["logits"] = round(parts["logits"] * overhead_factor)
        paged = per_gpu.paged if parts["optimizer_states"] and cuda else 0
        allocated = sum(parts.values()) - paged
        reserved = round(allocated * (1 + slack)) if cuda else allocated
        outside = (context + nccl) if cuda else 0
        overhead = round((reserved - allocated + outside) * overhead_factor)
        return phase, MemoryBreakdown(**parts, overhead=overhead), allocated, reserved, paged

    phase, breakdown, allocated, reserved, pageable = total(
        slack=ALLOCATOR_SLACK, context=CUDA_CONTEXT_BYTES, act_scale=1.0, held=True, transient=True
    )
    _, low, _, _, _ = total(
        slack=ALLOCATOR_SLACK_LOW,
        context=CUDA_CONTEXT_LOW_BYTES,
        act_scale=1.0,
        held=False,
        transient=False,
    )
    _, high, _, _, _ = total(
        slack=ALLOCATOR_SLACK_HIGH,
        context=CUDA_CONTEXT_HIGH_BYTES,
        act_scale=1.0 + ACTIVATION_HIGH_MARGIN,
        held=True,
        transient=True,
    )
    return MemoryEstimate(
        per_gpu_bytes=breakdown.total,
        low_bytes=low.total,
        high_bytes=high.total,
        strategy=strategy,
        breakdown=breakdown,
        allocated_bytes=allocated,
        reserved_bytes=reserved,
        peak_phase=phase,
        num_gpus=num_gpus,
        activations=act,
        pageable_bytes=pageable,
    )
