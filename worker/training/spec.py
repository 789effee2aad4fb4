"""The job spec the worker hands to the training child: a plain JSON dict, validated here.

It reuses the estimator's `TrainingSpec`, `LoraSpec` and `QLoraSpec`, so a job trains exactly what
was estimated. Fields that only training needs (learning rate, eval split) have defaults here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.estimator.spec import LoraSpec, Method, QLoraSpec, TrainingSpec
from worker.training.errors import JobSpecError

# Learning rates people start from: 2e-4 for LoRA/QLoRA adapters (Dettmers et al. 2023, QLoRA,
# appendix hyperparameters for 7B-13B), 2e-5 for full fine-tuning (Stanford Alpaca's recipe).
DEFAULT_LR = {Method.FULL: 2e-5, Method.LORA: 2e-4, Method.QLORA: 2e-4}
DEFAULT_MAX_GRAD_NORM = 1.0  # HF Trainer's default gradient clipping
DEFAULT_EVAL_FRACTION = 0.05  # a small held-out slice: eval loss without starving training
DEFAULT_MAX_DATASET_BYTES = 8 * 1024**3  # decompressed; far above any upload limit we configure


class ModelRef(BaseModel):
    """Where the model comes from: a local folder, or a hub id (cached, or downloadable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    hub_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRef:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of model.path and model.hub_id")
        return self

    def describe(self) -> str:
        """The path or hub id, for messages."""
        return self.path or self.hub_id or ""


class JobSpec(BaseModel):
    """Everything the child needs to train and meter one job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    method: Method
    model: ModelRef
    dataset_path: str
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    qlora: QLoraSpec = Field(default_factory=QLoraSpec)
    max_steps: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0)
    price_per_gpu_hour: float = Field(0.0, ge=0)
    num_gpus: int = Field(1, ge=1)
    strategy: Literal["single", "auto", "ddp", "fsdp_zero2", "fsdp_zero3"] | None = Field(
        None, description="how ranks share the work (the estimate's); default training.sharding"
    )
    flops_per_token: float | None = Field(None, gt=0, description="from the estimate, for MFU")
    peak_flops_per_gpu: float | None = Field(None, gt=0, description="default: the catalog's")
    eval_fraction: float = Field(DEFAULT_EVAL_FRACTION, ge=0, le=0.5)
    seed: int = 0
    learning_rate: float | None = Field(None, gt=0, description="default: by method")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(DEFAULT_MAX_GRAD_NORM, gt=0)
    mask_prompt: bool = Field(True, description="no loss on prompt tokens (non-text formats)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    offline: bool | None = Field(None, description="default: HF_HUB_OFFLINE from the environment")
    model_roots: list[str] | None = Field(None, description="if set, model.path must be inside")
    max_dataset_bytes: int = Field(DEFAULT_MAX_DATASET_BYTES, gt=0)
    started_at: float | None = Field(None, description="epoch seconds the job started (billing)")

    @property
    def lr(self) -> float:
        """The learning rate in effect."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]


def parse_job_spec(raw: dict[str, Any]) -> JobSpec:
    """Validate a job spec dict; raise JobSpecError naming the bad fields."""
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        )
        raise JobSpecError(f"invalid job spec: {problems}") from exc
