"""Request and response bodies of the jobs routes."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.estimator.spec import HardwareSpec, LoraSpec, Method, QLoraSpec, TrainingSpec
from app.jobs.spec import (
    DEFAULT_EVAL_POINTS,
    MAX_EVAL_FRACTION,
    MAX_EVAL_POINTS,
    LrSchedule,
    ModelRef,
)
from app.kit.instants import UtcInstant
from app.models import JobStatus

TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
MAX_TAGS = 20  # plenty for cost allocation (team, project, env, owner...); bounds the row count
MAX_TAG_VALUE_CHARS = 300  # the job_tags.value column width
# Control characters (C0, DEL, C1) in a tag value: never meant as a label, and a tab or CR at
# its start is how a CSV cell smuggles a formula past a spreadsheet (OWASP CSV injection).
TAG_VALUE_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_STEPS_LIMIT = 10_000_000  # ten million optimizer steps: beyond any real fine-tune
MAX_COST_LIMIT_USD = 10_000_000.0  # a budget cap above this is a typo, not a budget


class JobIn(BaseModel):
    """A fine-tune to run: a stored estimate (or the spec to make one), the method and the budget.

    With `estimate_id`, the training, LoRA, QLoRA and hardware settings come from that estimate
    and must not be repeated here; without it, they are estimated now from this body.
    """

    model_config = ConfigDict(extra="forbid")

    estimate_id: str | None = Field(None, max_length=40)
    method: Method
    model: ModelRef | None = Field(
        None, description="required unless the estimate was made for a local model path"
    )
    dataset_id: str | None = Field(
        None, max_length=40, description="required unless the estimate was made for a dataset"
    )
    training: TrainingSpec | None = None
    lora: LoraSpec | None = None
    qlora: QLoraSpec | None = None
    hardware: HardwareSpec | None = None
    max_cost_usd: float | None = Field(None, gt=0, le=MAX_COST_LIMIT_USD)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS_LIMIT)
    eval_fraction: float = Field(
        0.05, ge=0, le=MAX_EVAL_FRACTION, description="held-out share of examples for eval loss"
    )
    eval_points: int = Field(
        DEFAULT_EVAL_POINTS,
        ge=0,
        le=MAX_EVAL_POINTS,
        description="evaluations spread over the run, besides the base model's (step 0) and the "
        "final one; GET /v1/jobs/{id}/evals is the curve",
    )
    data_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="train on this share of the training examples (the same examples for every "
        "job on the dataset, nested across fractions); the eval set stays the whole dataset's",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    learning_rate: float | None = Field(
        None, gt=0, le=1e30, description="default: 2e-4 for LoRA/QLoRA, 2e-5 for full"
    )
    lr_schedule: LrSchedule = Field(
        "constant",
        description="after warm-up: constant, or decaying to zero at the run's end (linear, "
        "cosine); a decay settles the final loss, so runs of different lengths compare",
    )
    tags: dict[str, str] = Field(default_factory=dict, description='e.g. {"team": "ml"}')
    force: bool = Field(False, description="run even when the estimate exceeds max_cost_usd")

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags")
        for key, value in tags.items():
            if not TAG_KEY.match(key):
                raise ValueError(f"tag key {key[:40]!r} must be 1-100 of A-Z a-z 0-9 _ . -")
            if not value or len(value) > MAX_TAG_VALUE_CHARS:
                raise ValueError(f"tag {key!r} must have a value of 1-{MAX_TAG_VALUE_CHARS} chars")
            if TAG_VALUE_CONTROL.search(value) or value != value.strip():
                raise ValueError(
                    f"tag {key!r}: a value holds no control characters (tab, CR, LF...) and "
                    "no leading or trailing spaces"
                )
        return tags

    @model_validator(mode="after")
    def _estimate_or_spec(self) -> JobIn:
        if self.estimate_id is not None:
            given = [n for n in ("training", "lora", "qlora", "hardware") if getattr(self, n)]
            if given:
                raise ValueError(
                    f"{', '.join(given)} come from estimate {self.estimate_id}; "
                    "leave them out, or drop estimate_id to estimate this body anew"
                )
        elif self.model is None or self.dataset_id is None:
            raise ValueError("without estimate_id, give model and dataset_id")
        return self


class AttemptOut(BaseModel):
    """One attempt of a job: where and how long it ran, how it ended, what it cost."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    worker: str | None
    started_at: UtcInstant
    last_seen_at: UtcInstant = Field(description="its end, or its last heartbeat while running")
    outcome: str = Field(description="running, succeeded, failed, cancelled, budget_exceeded, lost")
    gpu_hours: float | None
    cost_usd: float | None


class JobOut(BaseModel):
    """A job: what was asked, the estimate snapshot, progress, and the metered actuals."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    status_detail: str | None
    method: Method
    model_ref: str
    gpu: str
    num_gpus: int = Field(description="devices over every node")
    nodes: int = Field(1, description="worker nodes the job spans, num_gpus / nodes on each")
    provider: str | None
    pricing: str
    queue: str
    team: str | None
    tags: dict[str, str]
    estimate_id: str | None
    dataset_id: str | None
    created_by_key_id: str | None
    max_cost_usd: float | None
    max_steps: int | None
    price_per_gpu_hour: float
    spec: dict[str, Any]
    estimate: dict[str, Any] = Field(description="the chosen method's estimate when submitted")
    est_cost_usd: float | None
    est_gpu_hours: float | None
    est_peak_bytes: int | None = Field(
        description="what must fit on one GPU (the estimate's per_gpu_bytes, CUDA context included)"
    )
    est_allocated_bytes: int | None = Field(
        None, description="the estimate's torch.cuda.max_memory_allocated"
    )
    est_reserved_bytes: int | None = Field(
        None, description="the estimate's torch.cuda.max_memory_reserved"
    )
    est_artifact_bytes: int | None
    created_at: UtcInstant
    started_at: UtcInstant | None
    finished_at: UtcInstant | None
    heartbeat_at: UtcInstant | None
    cancel_requested_at: UtcInstant | None
    attempts: int
    attempt_costs: list[AttemptOut] = Field(
        description="every attempt, each billed: act_cost_usd and act_gpu_hours are their sums"
    )
    worker: str | None
    error: str | None
    act_wall_s: float | None
    act_gpu_hours: float | None
    act_peak_bytes: int | None = Field(
        description="metered peak: torch.cuda.max_memory_allocated on a GPU, the peak resident "
        "set on the CPU (act_peak_kind says which); errors.peak_bytes compares it with the "
        "estimate of the same quantity"
    )
    act_peak_kind: str | None
    act_reserved_bytes: int | None = Field(None, description="torch.cuda.max_memory_reserved")
    act_device_peak_bytes: int | None = Field(
        None, description="the process's memory as the GPU driver counts it, CUDA context included"
    )
    act_tokens: int | None
    act_tokens_per_s: float | None
    act_mfu: float | None
    act_energy_kwh: float | None
    act_cost_usd: float | None = Field(
        description="metered GPU-hours at the reference list price (FOCUS ListCost)"
    )
    cost_source: str | None = Field(
        description="cloud (a provider invoices the GPU time) or self_hosted (own hardware); "
        "set by the worker that runs the job"
    )
    billing_provider: str | None = Field(description="cloud: the provider that invoices")
    internal_usd_per_gpu_hour: float | None = Field(description="self_hosted: internal rate")
    region: str | None
    sku: str | None = Field(description="the priced offer, e.g. an instance type")
    list_price_reference: str | None = Field(description="the cloud price the list cost is at")
    eval_loss: float | None
    artifact_bytes: int | None
    actuals: dict[str, Any] | None
    errors: dict[str, Any] | None = Field(
        description="per estimated quantity: estimated, actual and error_pct = "
        "(estimated - actual) / actual x 100 (positive: the estimate was too high)"
    )


class JobEventOut(BaseModel):
    """One progress or status event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: UtcInstant
    kind: str
    step: int | None
    total_steps: int | None
    loss: float | None
    tokens: int | None
    tokens_per_s: float | None
    accrued_cost_usd: float | None
    message: str | None


class EventPage(BaseModel):
    """Events after a given id, oldest first; pass `next_after` back to continue."""

    items: list[JobEventOut]
    next_after: int | None


ArtifactFormat = Literal["tar", "zip"]
