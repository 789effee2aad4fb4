"""Request and response bodies of the studies routes, and the stored analysis of a study."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.benefit.analysis import FitOut, Interval, RecommendationOut
from app.estimator.spec import HardwareSpec, LoraSpec, Method, QLoraSpec, TrainingSpec
from app.jobs.schemas import MAX_COST_LIMIT_USD
from app.jobs.spec import DEFAULT_EVAL_FRACTION, MAX_EVAL_FRACTION, LrSchedule, ModelRef
from app.kit.instants import UtcInstant
from app.models import JobStatus, StudyStatus

# Pilots on 5%, 10% and 20% of the data: three sizes a factor of two apart fix the three terms of
# E + B*D^-beta, and together they cost about a third of one full run (issue #25's plan).
DEFAULT_FRACTIONS = (0.05, 0.1, 0.2)
MAX_CANDIDATES = 8  # QLoRA, LoRA at two ranks, full, and room for a learning-rate variant or two
MAX_FRACTIONS = 8
MAX_NAME_CHARS = 60
NAMES = {Method.FULL: "full fine-tuning", Method.LORA: "LoRA", Method.QLORA: "QLoRA"}


class CandidateIn(BaseModel):
    """One way to fine-tune: the method and its settings (adapter rank and targets, LR)."""

    model_config = ConfigDict(extra="forbid")

    method: Method
    lora: LoraSpec | None = Field(None, description="LoRA/QLoRA adapter; default r=8, peft's")
    qlora: QLoraSpec | None = None
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="default: 2e-4 for LoRA/QLoRA, 2e-5 for full"
    )
    name: str | None = Field(
        None, min_length=1, max_length=MAX_NAME_CHARS, description='default e.g. "LoRA r16"'
    )

    @model_validator(mode="after")
    def _adapter_for_adapters(self) -> CandidateIn:
        if self.method == Method.FULL and (self.lora is not None or self.qlora is not None):
            raise ValueError("full fine-tuning trains no adapter: leave lora and qlora out")
        if self.method == Method.LORA and self.qlora is not None:
            raise ValueError("qlora settings belong to a qlora candidate")
        return self

    def label(self) -> str:
        """Its name, or one made from the method and the adapter's rank and targets."""
        if self.name:
            return self.name
        if self.method == Method.FULL:
            return NAMES[Method.FULL]
        lora = self.lora or LoraSpec()
        label = f"{NAMES[self.method]} r{lora.r}"
        if lora.target_modules == "all-linear":
            label += " all-linear"
        if self.learning_rate is not None:
            label += f" lr {self.learning_rate:g}"
        return label


class TargetIn(BaseModel):
    """What the fine-tune must reach: a mean eval loss, or a share below the base model's."""

    model_config = ConfigDict(extra="forbid")

    eval_loss: float | None = Field(None, gt=0, le=1000, description="mean held-out loss")
    relative_improvement: float | None = Field(
        None, gt=0, lt=1, description="e.g. 0.2: 20% below the base model's eval loss"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetIn:
        if (self.eval_loss is None) == (self.relative_improvement is None):
            raise ValueError("give exactly one of target.eval_loss or target.relative_improvement")
        return self

    def loss(self, base_loss: float | None) -> float | None:
        """The target as an eval loss (None while the base model's loss is not known)."""
        if self.eval_loss is not None:
            return self.eval_loss
        assert self.relative_improvement is not None
        return None if base_loss is None else base_loss * (1 - self.relative_improvement)


class StudyIn(BaseModel):
    """A study: candidates piloted on fractions of one dataset, against a target and a budget."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef
    dataset_id: str = Field(max_length=40)
    candidates: list[CandidateIn] = Field(min_length=1, max_length=MAX_CANDIDATES)
    fractions: list[float] = Field(
        default_factory=lambda: list(DEFAULT_FRACTIONS),
        min_length=2,
        max_length=MAX_FRACTIONS,
        description="shares of the training examples each candidate is piloted on (nested); "
        "small datasets need larger shares for the pilots to train on enough examples",
    )
    target: TargetIn
    pilot_budget_usd: float = Field(
        gt=0, le=MAX_COST_LIMIT_USD, description="refused when the pilots are estimated above it"
    )
    budget_usd: float | None = Field(
        None,
        gt=0,
        le=MAX_COST_LIMIT_USD,
        description="what a full-data run may cost: full fine-tuning is recommended only within it",
    )
    training: TrainingSpec | None = None
    hardware: HardwareSpec | None = None
    eval_fraction: float = Field(DEFAULT_EVAL_FRACTION, gt=0, le=MAX_EVAL_FRACTION)
    lr_schedule: LrSchedule = Field(
        "cosine", description="each pilot decays its own LR to zero, so runs of any length compare"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    tags: dict[str, str] = Field(default_factory=dict, description="put on every pilot job")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in fractions):
            raise ValueError("each fraction is a share of the data strictly between 0 and 1")
        if len(set(fractions)) != len(fractions):
            raise ValueError("fractions must differ from each other")
        return sorted(fractions)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, candidates: list[CandidateIn]) -> list[CandidateIn]:
        labels = [c.label() for c in candidates]
        if len(set(labels)) != len(labels):
            raise ValueError("two candidates are the same; give them different settings or names")
        return candidates


class RunIn(BaseModel):
    """Which candidate of an analysed study to run on the whole data."""

    model_config = ConfigDict(extra="forbid")

    candidate: int | None = Field(
        None, ge=0, lt=MAX_CANDIDATES, description="its index; default: the recommended one"
    )


class PilotOut(BaseModel):
    """One pilot job: its fraction of the data and what it measured and cost."""

    job_id: str
    fraction: float
    rows: int = Field(description="training examples it trains on")
    status: JobStatus
    eval_loss: float | None = Field(description="its final eval loss (completed runs only)")
    eval_loss_se: float | None
    cost_usd: float | None = Field(description="what it cost, or its estimate until it ends")


class CandidateOut(BaseModel):
    """A candidate with its pilots and, once analysed, its predicted full-data loss and cost."""

    index: int
    name: str
    method: Method
    settings: CandidateIn
    pilots: list[PilotOut]
    predicted_eval_loss: Interval | None
    predicted_cost_usd: Interval | None
    fit: FitOut | None
    prob_above_target: float | None
    usd_per_eval_loss_unit: float | None = Field(
        description="predicted cost over the eval loss it removes from the base model's: $ per nat"
    )
    note: str | None


class ProgressOut(BaseModel):
    """How far the pilots are."""

    pilots: int
    ended: int
    succeeded: int
    running: int


class StudyOut(BaseModel):
    """A study: its pilots, predictions, frontier and recommendation."""

    id: str
    status: StudyStatus
    status_detail: str | None
    created_at: UtcInstant
    finished_at: UtcInstant | None
    model_ref: str
    dataset_id: str | None
    eval_set_id: str | None = Field(description="the held-out items every pilot is scored on")
    fractions: list[float]
    full_rows: int = Field(description="training examples of the whole dataset")
    target: TargetIn
    target_eval_loss: float | None
    base_eval_loss: float | None
    pilot_budget_usd: float
    budget_usd: float | None
    est_pilot_cost_usd: float
    pilot_cost_usd: float = Field(description="what the pilots cost so far")
    progress: ProgressOut
    candidates: list[CandidateOut]
    frontier: list[int] = Field(
        description="indexes of the candidates no other beats on both predicted loss and cost"
    )
    recommendation: RecommendationOut | None
