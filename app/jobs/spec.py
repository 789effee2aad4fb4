"""The job contract: what a submitted job trains, built and validated at submit, stored on the row.

`JobSpec` is what the client asked for, resolved (the model, the estimate's settings, the price).
The API builds it in `jobs/service.create`, stores `model_dump(mode="json")` in `jobs.spec`, and
the worker rebuilds it from that column; it crosses the broker and the training child's pipe as
JSON and is validated again on the other side. What only the worker knows at run time (where it
put the dataset, when the attempt started, the device) is not part of it: see the worker's
`RunContext`. Training hyperparameters the API does not expose yet keep their defaults here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.estimator.spec import LoraSpec, Method, QLoraSpec, TrainingSpec

# Learning rates people start from: 2e-4 for LoRA/QLoRA adapters (Dettmers et al. 2023, QLoRA,
# appendix hyperparameters for 7B-13B), 2e-5 for full fine-tuning (Stanford Alpaca's recipe).
DEFAULT_LR = {Method.FULL: 2e-5, Method.LORA: 2e-4, Method.QLORA: 2e-4}
DEFAULT_MAX_GRAD_NORM = 1.0  # HF Trainer's default gradient clipping
DEFAULT_EVAL_FRACTION = 0.05  # a small held-out slice: eval loss without starving training
MAX_EVAL_FRACTION = 0.5  # hold out more and there is little left to train on
# Evaluations spread over a run (plus one of the base model before the first step, and one at the
# end of a completed run): enough points to draw an eval curve, few enough that evaluating stays a
# small part of the run.
DEFAULT_EVAL_POINTS = 4
MAX_EVAL_POINTS = 50
MAX_MODEL_PATH_CHARS = 1024  # as app/kit/paths.py allows
MAX_HUB_ID_CHARS = 96  # the Hub's own limit on a repo id (huggingface_hub validate_repo_id)
# A Hugging Face repo id, owner/name, and never a path: each part starts and ends with a letter,
# digit or '_' (so no '.' or '..' part and no leading '/'), with '.', '-' and '_' inside;
# '--' (the separator of the hub cache's folder names) and '..' are refused anywhere, as the Hub
# itself refuses them (huggingface_hub's validate_repo_id).
_HUB_PART = r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?"
HUB_ID_PATTERN = rf"^{_HUB_PART}/{_HUB_PART}$"
Strategy = Literal["single", "auto", "ddp", "fsdp_zero2", "fsdp_zero3"]
LrSchedule = Literal["constant", "linear", "cosine"]


class ModelRef(BaseModel):
    """The model to fine-tune: a folder under a model root, or a Hugging Face repo id, which the
    worker loads only from its hub cache (downloaded there first unless it runs offline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(None, min_length=1, max_length=MAX_MODEL_PATH_CHARS)
    hub_id: str | None = Field(
        None,
        min_length=3,
        max_length=MAX_HUB_ID_CHARS,
        pattern=HUB_ID_PATTERN,
        description="a Hugging Face repo id, owner/name (never a path)",
    )

    @field_validator("hub_id")
    @classmethod
    def _a_repo_id(cls, value: str | None) -> str | None:
        if value is not None and ("--" in value or ".." in value):
            raise ValueError(f"{value!r} is not a Hugging Face repo id: no '--' or '..' in it")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRef:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of model.path or model.hub_id")
        return self

    def describe(self) -> str:
        """The path or hub id, for messages."""
        return self.path or self.hub_id or ""


class JobSpec(BaseModel):
    """One fine-tune as submitted and resolved: method, model, settings, budget and price.

    `num_gpus` is the plan's device count over its `nodes` worker nodes and `strategy` how its
    ranks share the work.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    model: ModelRef
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    qlora: QLoraSpec = Field(default_factory=QLoraSpec)
    max_steps: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0, description="the whole job's budget")
    price_per_gpu_hour: float = Field(0.0, ge=0)
    num_gpus: int = Field(1, ge=1, description="devices over every node")
    nodes: int = Field(1, ge=1, description="worker nodes the job spans, num_gpus split evenly")
    strategy: Strategy | None = Field(
        None, description="how ranks share the work (the estimate's); default training.sharding"
    )
    flops_per_token: float | None = Field(None, gt=0, description="from the estimate, for MFU")
    eval_fraction: float = Field(DEFAULT_EVAL_FRACTION, ge=0, le=MAX_EVAL_FRACTION)
    eval_points: int = Field(
        DEFAULT_EVAL_POINTS,
        ge=0,
        le=MAX_EVAL_POINTS,
        description="evaluations spread over the run besides the base model's and the final one; "
        "0: the final one only",
    )
    data_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the training examples to train on (pilots)"
    )
    seed: int = Field(0, ge=0)
    learning_rate: float | None = Field(None, gt=0, description="default: by method")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: LrSchedule = Field(
        "constant", description="after warm-up: constant, or decaying to zero at the run's end"
    )
    max_grad_norm: float | None = Field(DEFAULT_MAX_GRAD_NORM, gt=0)
    mask_prompt: bool = Field(True, description="no loss on prompt tokens (non-text formats)")
    forced: bool = Field(False, description="submitted with force: past a fit or budget refusal")
    as_estimated: bool = Field(
        True,
        description="trains the model and dataset its estimate was made for: only such jobs "
        "calibrate estimates",
    )
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("training")
    @classmethod
    def _levers_decided(cls, training: TrainingSpec) -> TrainingSpec:
        # A job runs with every lever decided: the plan's choice, else the plain default.
        return training.resolved()

    @model_validator(mode="after")
    def _whole_nodes(self) -> JobSpec:
        if self.num_gpus % self.nodes:
            raise ValueError(
                f"num_gpus={self.num_gpus} does not split into {self.nodes} nodes of equal size; "
                f"give a multiple of {self.nodes}"
            )
        return self

    @property
    def gpus_per_node(self) -> int:
        """Devices (ranks) on each node."""
        return self.num_gpus // self.nodes

    @property
    def lr(self) -> float:
        """The learning rate in effect."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]
