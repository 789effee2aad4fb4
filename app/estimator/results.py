"""What the estimator answers: per-method results, ranked plans and the recommendation.

Plain frozen pydantic models, so the API can return them as they are and store them as JSON.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.estimator.intervals import Basis, bounds
from app.estimator.spec import Method


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class MemoryBreakdownOut(_Out):
    """Expected bytes per GPU by what holds them."""

    weights: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    master_weights: int = 0
    activations: int = 0
    logits: int = 0
    overhead: int = 0


class MemoryOut(_Out):
    """Peak memory per GPU, in bytes, as three named quantities: what torch allocates, what its
    caching allocator reserves, and what must fit on the GPU. Compare a measurement with the
    quantity it measures: `allocated_bytes` with torch.cuda.max_memory_allocated (LitGPT and
    torchtune report it), `reserved_bytes` with max_memory_reserved (PEFT's tables),
    `per_gpu_bytes` with the GPU's capacity or nvidia-smi."""

    per_gpu_bytes: int = Field(
        description="what must fit on one GPU: reserved + the CUDA context and NCCL buffers "
        "(what nvidia-smi shows); the plans fit this"
    )
    allocated_bytes: int = Field(0, description="expected torch.cuda.max_memory_allocated")
    reserved_bytes: int = Field(0, description="expected torch.cuda.max_memory_reserved")
    low_bytes: int = Field(description="low bound of per_gpu_bytes")
    high_bytes: int = Field(description="high bound of per_gpu_bytes")
    breakdown: MemoryBreakdownOut
    pageable_bytes: int = Field(
        0,
        description="of per_gpu_bytes, paged optimizer states the driver may move to host "
        "memory: what must fit in the GPU is per_gpu_bytes - pageable_bytes",
    )


LeverName = Literal[
    "optimizer_8bit", "adapter_bf16", "micro_batch", "gradient_checkpointing", "paged_optimizer"
]


class LeverOut(_Out):
    """One memory lever in effect: what it is set to, who chose it, and why."""

    lever: LeverName
    setting: str
    chosen_by: Literal["planner", "request"]
    why: str = Field(description="its effect on memory and time, in GiB and hours")


class TrainingOut(_Out):
    """The training settings the plan runs with; a job submitted from it runs with exactly these."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    optimizer: str
    adapter_dtype: Literal["fp32", "bf16"] | None = Field(
        None, description="LoRA/QLoRA: the dtype of A and B (None for full fine-tuning)"
    )
    levers: list[LeverOut] = Field(
        default_factory=list, description="each memory lever that is on, and why"
    )


class FlopsOut(_Out):
    """Matmul FLOPs: per token by part, and for the whole run."""

    per_token: dict[str, float]
    total: float


class TimeOut(_Out):
    """Where the wall time goes, in seconds."""

    compute_s: float
    weight_stream_s: float
    dequant_s: float
    optimizer_s: float
    comm_s: float
    overhead_s: float
    adapter_s: float = 0.0  # LoRA/QLoRA adapter branches (memory-bound)
    elementwise_s: float = Field(
        0.0, description="norms, rotary, activations, residuals and the loss: memory-bound"
    )
    host_s: float = Field(0.0, description="the host issuing each step's work (per-step floor)")
    overlap_s: float = Field(
        0.0,
        description="host and device at work at once (never positive): the terms sum to total_s",
    )
    paging_s: float = Field(
        0.0, description="paged optimizer states moved to host memory and back (the host link)"
    )
    total_s: float
    micro_steps: int | None = None  # per GPU
    mfu_peak: float | None = Field(
        None, description="efficiency of large matmuls; `mfu` is this run's, at its work per matmul"
    )
    host_scale: float = Field(1.0, description="calibrated factor on the modelled per-step floor")
    overlap_power: float | None = Field(
        None, description="how host and device time combine: 1 adds them (CPU), large p is the max"
    )


class RangeOut(_Out):
    """Low and high bounds around an expected figure (time and money)."""

    low: float
    high: float


def range_of(value: float | None, basis: Basis) -> RangeOut | None:
    """The bounds of `value` for an estimate resting on `basis` (None without a value)."""
    low, high = bounds(value, basis)
    return RangeOut(low=low, high=high) if low is not None and high is not None else None


class _PriceOrigin(_Out):
    """Where a plan's price comes from, and the contracted rate beside the list one."""

    region: str | None = Field(None, description="region of the priced offer")
    instance: str | None = Field(None, description="the instance the offer rents")
    price_as_of: date | None = Field(None, description="when the price was read from its source")
    price_source: str | None = Field(None, description="where the price comes from")
    contracted_price_per_gpu_hour: float | None = Field(
        None, description="your rate card's rate for this offer (None: list price applies)"
    )
    contracted_cost_usd: float | None = Field(None, description="the cost at the contracted rate")
    commitment_id: str | None = Field(None, description="the rate card line's commitment")


class Plan(_PriceOrigin):
    """One way to run a method: GPU type and count, provider, and what it costs, or why not."""

    gpu: str
    num_gpus: int
    nodes: int
    provider: str | None
    pricing: str
    fits: bool
    runnable: bool = Field(
        True, description="a worker of the fleet can run it (devices of one node, a GPU served)"
    )
    tight: bool = Field(
        False,
        description="fits at the expected peak, but the high memory bound exceeds the GPU's",
    )
    reason: str | None = Field(None, description="why this option is not usable, if it is not")
    per_gpu_bytes: int
    gpu_memory_bytes: int
    strategy: str
    levers: list[LeverName] = Field(
        default_factory=list, description="memory levers the option needs (see `training`)"
    )
    hours: float
    billed_gpus: int
    idle_gpus: int = Field(0, description="GPUs billed (whole instances) that the run leaves idle")
    idle_cost_usd: float | None = Field(None, description="what the idle GPUs cost")
    gpu_hours: float
    price_per_gpu_hour: float | None
    cost_usd: float | None
    hours_range: RangeOut | None = None
    cost_usd_range: RangeOut | None = None
    mfu: float
    basis: Basis


class MethodResult(_PriceOrigin):
    """The estimate of one method on the hardware asked for (or the cheapest that fits)."""

    method: Method
    trainable_params: int
    memory: MemoryOut
    gpu: str
    gpu_memory_bytes: int = Field(0, description="memory of one of its GPUs, what must fit")
    num_gpus: int
    nodes: int
    strategy: str
    training: TrainingOut | None = Field(
        None, description="the settings it runs with: which memory levers are on, and why"
    )
    fits: bool
    runnable: bool = Field(
        True,
        description="a worker of the fleet can run it: the devices of one node, of a GPU kind "
        "served; a job for a plan that is not is refused at submit",
    )
    over_budget: bool = Field(False, description="its cost exceeds the request's budget_usd")
    tight: bool = Field(
        False,
        description="fits at the expected peak, but the high memory bound exceeds the GPU's: "
        "it may run out of memory",
    )
    flops: float
    flops_detail: FlopsOut
    hours: float
    time: TimeOut
    steps: int
    billed_gpus: int
    idle_gpus: int = Field(0, description="GPUs billed (whole instances) that the run leaves idle")
    idle_cost_usd: float | None = Field(None, description="what the idle GPUs cost")
    gpu_hours: float
    provider: str | None
    pricing: str
    price_per_gpu_hour: float | None
    cost_usd: float | None = Field(
        description="GPU-hours x price; None when it does not fit (it cannot run as estimated)"
    )
    hours_range: RangeOut | None = Field(
        None, description="low/high wall-clock hours: widest on priors, narrower calibrated"
    )
    gpu_hours_range: RangeOut | None = None
    cost_usd_range: RangeOut | None = None
    mfu: float
    basis: Basis
    calibration_jobs: int
    memory_factor: float = Field(1.0, description="calibrated factor applied to memory")
    artifact_bytes: int = Field(
        description="what the run saves: the full checkpoint, or the adapter file"
    )
    storage_cost_usd: float = Field(
        description="what storing the run's output costs: `artifact_bytes` once per task "
        "variant (`variants` copies), kept `storage_months`, at one storage price per estimate "
        "(hardware.provider's, else the cheapest listed); the base model, which every method "
        "starts from and serving an adapter keeps, is not counted. A smaller artifact never "
        "costs more."
    )
    notes: list[str]


class ModelSummary(_Out):
    """What model is being fine-tuned."""

    architecture: str
    model_type: str
    total_params: int
    active_params: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    is_encoder_decoder: bool = False


class DatasetSummary(_Out):
    """How many tokens the run processes (padding included unless packed)."""

    num_sequences: int
    tokens_per_epoch: float
    epochs: float
    processed_tokens: float
    seq_len: int
    mean_padded_len: float
    packing: bool
    micro_batches: int
    steps: int = Field(description="optimizer steps on a single GPU")


class Recommendation(_Out):
    """The recommended method (None if nothing is feasible) and why, as plain sentences."""

    method: Method | None
    reasons: list[str]


class LoraTargetsOut(_Out):
    """The LoRA target modules the estimate used, after `auto` was resolved for the model."""

    target_modules: list[str] | str = Field(description="module names, a regex or all-linear")
    source: Literal["requested", "peft_default", "fallback"] = Field(
        description="named in the request; peft's default for the model type; or all-linear "
        "because peft has no default for it"
    )


class EstimateResult(_Out):
    """The estimator's full answer for one request."""

    catalog_version: int
    model: ModelSummary
    dataset: DatasetSummary
    results: dict[Method, MethodResult]
    plans: dict[Method, list[Plan]]
    recommendation: Recommendation
    lora: LoraTargetsOut | None = Field(None, description="LoRA/QLoRA only: targets in effect")
    notes: list[str] = Field(default_factory=list)
