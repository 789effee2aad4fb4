"""Bytes of the model's state: weights (any dtype, int8, NF4/FP4 with or without double
quantization), gradients, optimizer states and the optimizer step's temporaries.

Everything here is exact for the libraries named in each comment: it is the size of the tensors
they allocate, which tests check against real tensors after a training step on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import ceil, prod

from app.estimator.conventions import (
    ADAPTERS_FP32,
    DTYPE_BYTES,
    adapter_dtype,
    base_dtype,
    saved_module_dtype,
)
from app.estimator.errors import EstimateInputError
from app.estimator.lora import lora_targets, lora_trainable_params
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import LoraSpec, Method, QLoraSpec

FP32 = 4
HALF = 2

# bitsandbytes 4-bit (`bitsandbytes.functional.quantize_4bit`): two 4-bit codes per uint8 byte,
# one fp32 absmax per block of 64 weights, a 16-entry fp32 code table per tensor.
BNB_4BIT_BLOCKSIZE = 64
BNB_4BIT_CODE_BYTES = 16 * FP32
# Double quantization (`compress_statistics=True`): absmax stored as uint8 through a 256-entry
# fp32 dynamic map, with one fp32 absmax per 256 absmax values and one fp32 offset per tensor.
BNB_NESTED_BLOCKSIZE = 256
BNB_NESTED_CODE_BYTES = 256 * FP32
BNB_NESTED_OFFSET_BYTES = FP32
# LLM.int8 (`bnb.nn.Int8Params`): one int8 per weight plus one fp32 scale per output row (SCB).
INT8_ROW_SCALE_BYTES = FP32

# bitsandbytes 8-bit optimizers (`Optimizer2State`, blockwise): uint8 states with one fp32 absmax
# per 256 values; tensors under `min_8bit_size` (4096 elements) keep fp32 states instead.
BNB_8BIT_BLOCKSIZE = 256
BNB_MIN_8BIT_SIZE = 4096
BNB_8BIT_QMAPS_BYTES = 2 * 256 * FP32  # the two 256-entry fp32 dynamic maps, shared by all


def quantized_linear_bytes(
    numel: int, *, scheme: str, double_quant: bool = False, out_features: int = 0
) -> int:
    """Bytes bitsandbytes allocates for one quantized weight of `numel` elements."""
    if scheme == "int8":
        return numel + out_features * INT8_ROW_SCALE_BYTES
    blocks = ceil(numel / BNB_4BIT_BLOCKSIZE)
    packed = ceil(numel / 2) + BNB_4BIT_CODE_BYTES
    if not double_quant:
        return packed + blocks * FP32
    nested = ceil(blocks / BNB_NESTED_BLOCKSIZE) * FP32
    return packed + blocks + nested + BNB_NESTED_CODE_BYTES + BNB_NESTED_OFFSET_BYTES


@lru_cache(maxsize=256)  # asked for every plan option; an analysis hashes by its config
def quantizable_layers(analysis: ModelAnalysis) -> tuple[tuple[str, int, int], ...]:
    """Linear layers transformers hands to bitsandbytes: all but the output layer."""
    return tuple(
        layer
        for layer in analysis.linear_layers
        if layer[0].rsplit(".", 1)[-1] not in ("lm_head", "embed_out")
    )


@dataclass(frozen=True)
class WeightBytes:
    """Frozen base bytes and, for QLoRA, how much of it is quantized."""

    total: int
    quantized_params: int


@lru_cache(maxsize=1024)
def base_weight_bytes(
    analysis: ModelAnalysis,
    *,
    dtype_bytes: int,
    quant: str | None = None,
    double_quant: bool = False,
) -> WeightBytes:
    """Bytes of the model's own weights: all in `dtype_bytes`, or with the linear layers
    quantized (`quant` in nf4/fp4/int8); embeddings, norms, lm_head and fused MoE experts stay
    in `dtype_bytes` (bitsandbytes only replaces nn.Linear modules)."""
    if quant is None:
        return WeightBytes(analysis.total_params * dtype_bytes, 0)
    layers = quantizable_layers(analysis)
    quant_params = sum(i * o for _, i, o in layers)
    packed = sum(
        quantized_linear_bytes(i * o, scheme=quant, double_quant=double_quant, out_features=o)
        for _, i, o in layers
    )
    rest = (analysis.total_params - quant_params) * dtype_bytes
    return WeightBytes(packed + rest, quant_params)


def trainable_shapes(
    analysis: ModelAnalysis,
    *,
    full: bool,
    lora_layers: tuple[tuple[str, int, int], ...] = (),
    r: int = 0,
) -> list[tuple[int, ...]]:
    """Shapes of the trainable tensors (per-tensor optimizer rules look at them): every
    parameter for full fine-tuning, else each adapter's A (r x in) and B (out x r)."""
    if full:
        return list(analysis.param_shapes)
    return [shape for _, i, o in lora_layers for shape in ((r, i), (o, r))]


@dataclass(frozen=True)
class OptimizerBytes:
    """Optimizer state that lives across steps, and what the step allocates on top of it."""

    states: int
    step_transient: int
    paged: bool  # bitsandbytes paged states: CUDA unified memory, outside torch's allocator


def optimizer_bytes(
    optimizer: str,
    *,
    shapes: list[tuple[int, ...]],
    param_bytes: int,
    extra_params: int = 0,
) -> OptimizerBytes:
    """States of `optimizer` for trainable tensors of `shapes` stored in `param_bytes`;
    `extra_params` are trainable elements whose shapes are unknown (peft modules_to_save)."""
    sizes = [prod(shape) for shape in shapes] + ([extra_params] if extra_params else [])
    n = sum(sizes)
    if optimizer == "adamw":
        # torch.optim.AdamW: exp_avg and exp_avg_sq shaped and typed like the parameter; the
        # default multi-tensor (foreach) step allocates sqrt(exp_avg_sq) for every tensor at once
        return OptimizerBytes(2 * n * param_bytes, n * param_bytes, paged=False)
    if optimizer == "paged_adamw_32bit":
        # bitsandbytes 32-bit states are fp32 whatever the parameter dtype
        return OptimizerBytes(2 * n * FP32, 0, paged=True)
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        states = BNB_8BIT_QMAPS_BYTES if any(s >= BNB_MIN_8BIT_SIZE for s in sizes) else 0
        for size in sizes:
            if size < BNB_MIN_8BIT_SIZE:
                states += 2 * size * FP32
            else:
                states += 2 * (size + ceil(size / BNB_8BIT_BLOCKSIZE) * FP32)
        return OptimizerBytes(states, 0, paged=optimizer.startswith("paged"))
    if optimizer == "sgd":
        return OptimizerBytes(0, 0, paged=False)  # torch.optim.SGD, momentum=0: no state
    if optimizer == "adafactor":
        return _adafactor(shapes, extra_params)
    raise EstimateInputError(f"unknown optimizer {optimizer!r}", field="training.optimizer")


def _adafactor(shapes: list[tuple[int, ...]], extra: int) -> OptimizerBytes:
    """transformers.optimization.Adafactor (beta1=None): for a matrix, second moments factored
    into a row vector (shape[:-1]) and a column vector (shape[:-2] + shape[-1:]); for a vector,
    a full one. It upcasts 16-bit gradients first, so states are fp32. The step works on one
    tensor at a time: fp32 grad, squared update and update (3 fp32 copies of the largest)."""
    states = extra * FP32
    for shape in shapes:
        if len(shape) >= 2:
            states += (prod(shape[:-1]) + prod(shape[:-2]) * shape[-1]) * FP32
        else:
            states += prod(shape) * FP32
    largest = max([prod(shape) for shape in shapes] + [extra])
    return OptimizerBytes(states, 3 * largest * FP32, paged=False)


@dataclass(frozen=True)
class StateBytes:
    """Unsharded bytes of the model's state on one replica (exact tensor sizes)."""

    weights: int  # stored weights: frozen base (quantized for QLoRA) and 16/32-bit trainables
    master_weights: int  # fp32 trainable weights under *_mixed
    compute_copies: int  # autocast's 16-bit copies of fp32 weights, alive forward to backward
    gradients: int
    optimizer: OptimizerBytes
    trainable_params: int
    head_gradient: int  # lm_head/embedding gradient, the first one backward allocates


def state_bytes(
    *,
    analysis: ModelAnalysis,
    method: Method,
    precision: str,
    optimizer: str,
    lora: LoraSpec,
    qlora: QLoraSpec,
    adapters_fp32: bool = ADAPTERS_FP32,
) -> StateBytes:
    """Weights, gradients and optimizer state of one replica, as torch/peft/bnb size them
    (dtypes by `conventions`; `adapters_fp32=False` for stacks that keep 16-bit adapters)."""
    targets = lora.target_modules
    adapter = (
        lora.r,
        targets if isinstance(targets, str) else tuple(targets),
        tuple(lora.modules_to_save),
    )
    return _state_bytes(analysis, method, precision, optimizer, adapter, qlora, adapters_fp32)


# The memory model asks once per (GPU count, strategy) of every plan with the same inputs.
@lru_cache(maxsize=1024)
def _state_bytes(
    analysis: ModelAnalysis,
    method: Method,
    precision: str,
    optimizer: str,
    adapter: tuple[int, tuple[str, ...] | str, tuple[str, ...]],
    qlora: QLoraSpec,
    adapters_fp32: bool,
) -> StateBytes:
    r, targets, to_save = adapter
    lora = LoraSpec(
        r=r,
        target_modules=targets if isinstance(targets, str) else list(targets),
        modules_to_save=list(to_save),
    )
    full = method is Method.FULL
    mixed = precision.endswith("_mixed")
    store = DTYPE_BYTES[base_dtype(method=method, precision=precision)]
    if full:
        trainable = analysis.total_params
        weights = 0 if mixed else trainable * store
        master = trainable * FP32 if mixed else 0
        # every matmul weight; experts run through grouped_mm, which autocast leaves alone
        linear_params = sum(i * o for _, i, o in analysis.linear_layers) if mixed else 0
        copies = 2 * (linear_params + analysis.router_weight_params) if mixed else 0
        shapes = trainable_shapes(analysis, full=True)
        opt = optimizer_bytes(optimizer, shapes=shapes, param_bytes=store)
        head = analysis.vocab_size * analysis.hidden_size * store
        return StateBytes(weights, master, copies, trainable * store, opt, trainable, head)
    trainable = lora_trainable_params(analysis, lora)
    quant = qlora.quant_type if method is Method.QLORA else None
    base = base_weight_bytes(
        analysis, dtype_bytes=store, quant=quant, double_quant=qlora.double_quant
    )
    layers = lora_targets(analysis, lora)
    shapes = trainable_shapes(analysis, full=False, lora_layers=layers, r=lora.r)
    adapter_params = sum(lora.r * (i + o) for _, i, o in layers)
    extra = max(trainable - adapter_params, 0)  # modules_to_save copies
    abytes = DTYPE_BYTES[adapter_dtype(precision=precision, adapters_fp32=adapters_fp32)]
    sbytes = DTYPE_BYTES[saved_module_dtype(precision=precision)]
    trained = adapter_params * abytes + extra * sbytes
    # under *_mixed every trained weight is an fp32 master that autocast copies to 16 bits
    weights = base.total + (0 if mixed else trained)
    master = trained if mixed else 0
    copies = 2 * trainable if mixed else 0
    opt = _combined(
        optimizer_bytes(optimizer, shapes=shapes, param_bytes=abytes),
        optimizer_bytes(optimizer, shapes=[], param_bytes=sbytes, extra_params=extra),
        optimizer,
    )
    return StateBytes(weights, master, copies, trained, opt, trainable, 0)


def _combined(a: OptimizerBytes, b: OptimizerBytes, optimizer: str) -> OptimizerBytes:
    """One optimizer over two groups of tensors stored in different dtypes."""
    if not b.states and not b.step_transient:
        return a
    states = a.states + b.states
    if optimizer.endswith("8bit") and a.states and b.states:
        states -= BNB_8BIT_QMAPS_BYTES  # the two dynamic maps exist once per optimizer
    # AdamW's foreach step allocates for all tensors at once; Adafactor one tensor at a time
    if optimizer == "adafactor":
        transient = max(a.step_transient, b.step_transient)
    else:
        transient = a.step_transient + b.step_transient
    return OptimizerBytes(states, transient, a.paged)
