"""What a job really spent and did: made by the training child (or its parent), stored on the row.

The child meters a run it finished or stopped and sends `model_dump(mode="json")` over its pipe;
the parent validates it again and the worker stores it in `jobs.actuals`. When the child died
without a result, the parent makes a `partial` one from the clock and the last progress event:
only the figures marked "always" below are known then.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobActuals(BaseModel):
    """The metered figures of one run, as stored beside its estimate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partial: bool = Field(False, description="the child left no result: time and money only")
    # always
    wall_s: float = Field(description="job start (billing start) to the end of saving")
    gpu_hours: float
    num_gpus: int
    price_per_gpu_hour: float
    cost_usd: float
    steps: int = Field(
        description="optimizer steps; each is one global batch: micro_batch_size x "
        "gradient_accumulation_steps x world_size sequences"
    )
    tokens: int = Field(description="real (non-pad) tokens trained on")
    final_loss: float | None = None
    artifact_path: str | None = Field(None, description="the child's local artifact folder")
    artifact_bytes: int | None = None
    # a run the child metered itself
    device_kind: str | None = None
    device_name: str | None = None
    startup_s: float | None = Field(None, description="job start to the first training step")
    train_s: float | None = Field(None, description="the training loop only")
    warmup_s: float | None = Field(
        None,
        description="of train_s, what the first step took beyond a steady one (one-time set-up "
        "inside the loop); calibration counts it with start-up, not with the per-step time",
    )
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = Field(
        None,
        description="cuda_allocated (torch.cuda.max_memory_allocated), or cpu_rss (the "
        "process's peak resident set)",
    )
    peak_memory_reserved_bytes: int | None = Field(
        None, description="torch.cuda.max_memory_reserved (GPU only)"
    )
    peak_memory_device_bytes: int | None = Field(
        None,
        description="the process's memory on its device as the driver counts it (NVML) when "
        "training ends: reserved + CUDA context, what nvidia-smi shows (GPU only)",
    )
    tokens_processed: int | None = Field(None, description="including padding")
    loss_tokens: int | None = Field(None, description="tokens the loss was computed on")
    tokens_per_s: float | None = Field(None, description="real tokens per second of training")
    processed_tokens_per_s: float | None = None
    achieved_tflops: float | None = None
    mfu: float | None = None
    peak_tflops_per_gpu: float | None = None
    energy_kwh: float | None = None
    eval_loss: float | None = Field(
        None, description="token-weighted mean loss over the held-out items (app/evals)"
    )
    eval_loss_se: float | None = Field(None, description="its standard error over the items")
    eval_token_accuracy: float | None = None
    eval_items: int | None = None
    eval_set_id: str | None = Field(None, description="the held-out set's content hash")
    eval_s: float | None = Field(None, description="evaluating, at intervals and at the end")
    precision: str | None = Field(None, description="what was used, e.g. fp32 on the CPU")
    precision_requested: str | None = None
    library_versions: dict[str, str | None] = Field(default_factory=dict)
    stop_reason: str | None = Field(None, description="completed, cancelled or budget_exceeded")
    total_steps: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    learning_rate: float | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="the dataset's statistics")
    # several devices: one rank per device; tokens and energy above are over every rank, the
    # peak is the largest rank's, GPU-hours and cost bill every device
    world_size: int = Field(1, ge=1, description="ranks the job ran, one per device")
    nodes: int = Field(1, ge=1, description="worker nodes the ranks ran on")
    strategy: str | None = Field(None, description="single, ddp, fsdp_zero2 or fsdp_zero3")
    peak_memory_per_rank_bytes: list[int] | None = Field(
        None, description="each rank's peak, in rank order"
    )
    # added by the worker: the artifact in storage, the worker's devices the job held
    artifact_weights_bytes: int | None = None
    worker_devices: list[int] | None = None
