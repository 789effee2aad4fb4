"""The estimate request (issue 4) and the stored estimate as the API returns it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from app.catalog.schemas import ModelConfigIn, ModelPathIn
from app.estimator.results import EstimateResult
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
    check_lengths,
)
from app.kit.instants import UtcInstant

MAX_VARIANTS = 10_000  # task-specific versions of one base model; past this it is a typo
MAX_STORAGE_MONTHS = 120  # ten years of keeping artifacts
MAX_BUDGET_USD = 1e9  # larger than any fine-tuning budget on record
DomainShift = Literal["low", "medium", "high"]

CatalogId = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _model_kind(value: Any) -> str:
    if isinstance(value, ModelPathIn) or (
        isinstance(value, dict) and "path" in value and "config" not in value
    ):
        return "path"
    if isinstance(value, dict | ModelConfigIn):
        return "config"
    return "id"  # strings, and anything else gets "should be a valid string"


ModelRef = Annotated[
    Annotated[CatalogId, Tag("id")]
    | Annotated[ModelConfigIn, Tag("config")]
    | Annotated[ModelPathIn, Tag("path")],
    Discriminator(_model_kind),
]


class DatasetIn(DatasetShape):
    """The dataset's shape, or `dataset_id` of an uploaded dataset (then nothing else)."""

    dataset_id: str | None = Field(None, min_length=1, max_length=40)

    @model_validator(mode="after")
    def _enough_to_count(self) -> DatasetIn:
        if self.dataset_id is not None:
            given = [
                name
                for name in (
                    "num_examples",
                    "avg_tokens",
                    "max_tokens",
                    "min_tokens",
                    "total_tokens",
                )
                if getattr(self, name) is not None
            ]
            if given:
                raise ValueError(f"give dataset_id alone, not together with {', '.join(given)}")
            return self
        # DatasetShape's own rules (its validator of the same name is replaced by this one).
        if self.total_tokens is None and (self.num_examples is None or self.avg_tokens is None):
            raise ValueError(
                "give total_tokens, num_examples together with avg_tokens, or dataset_id"
            )
        check_lengths(self)
        return self

    def shape(self) -> DatasetShape:
        """The estimator's view (only for inline shapes)."""
        return DatasetShape.model_validate(self.model_dump(exclude={"dataset_id"}))


class EstimateIn(_In):
    """What to estimate. Every field but `model` and `dataset` has a default."""

    model: ModelRef = Field(
        description="a catalog id (GET /v1/catalog/models), {'config': {...}} or {'path': '...'}",
        examples=["meta-llama/Llama-2-7b-hf"],
    )
    dataset: DatasetIn = Field(
        description=(
            "{num_examples, avg_tokens, max_tokens, min_tokens}, {total_tokens} or {dataset_id}"
        ),
        examples=[{"num_examples": 50000, "avg_tokens": 150, "max_tokens": 1304}],
    )
    methods: list[Method] = Field(
        default_factory=lambda: list(Method), min_length=1, max_length=len(Method)
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    qlora: QLoraSpec = Field(default_factory=QLoraSpec)
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    variants: int = Field(1, ge=1, le=MAX_VARIANTS, description="task-specific versions to keep")
    storage_months: float = Field(12, ge=0, le=MAX_STORAGE_MONTHS)
    budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET_USD)
    domain_shift: DomainShift | None = Field(
        None, description="how far the data is from the base model's: low, medium or high"
    )
    lora_tried_and_insufficient: bool = False
    target_eval_loss: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="the eval loss the fine-tune must reach on an uploaded dataset's held-out "
        "items: the team's finished jobs on it then say whether LoRA was tried and not enough "
        "(a finished study of the dataset brings its own target)",
    )
    available_gpus: dict[str, int] | None = Field(
        None,
        description="GPUs you can actually get, by catalog id, with how many: {'A100-80GB': 8}",
        max_length=64,
    )

    @field_validator("methods")
    @classmethod
    def _unique(cls, methods: list[Method]) -> list[Method]:
        if len(set(methods)) != len(methods):
            raise ValueError("each method at most once")
        return methods

    @field_validator("available_gpus")
    @classmethod
    def _counts(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None and any(not 0 <= n <= 4096 for n in value.values()):
            raise ValueError("each available GPU count must be between 0 and 4096")
        return value

    @model_validator(mode="after")
    def _target_on_held_out_items(self) -> EstimateIn:
        if self.target_eval_loss is not None and self.dataset.dataset_id is None:
            raise ValueError(
                "target_eval_loss is judged on an uploaded dataset's held-out items: give "
                "dataset.dataset_id, or leave target_eval_loss out"
            )
        return self


class DatasetCheckOut(BaseModel):
    """An uploaded dataset at the estimate's seq_len: examples the worker would drop."""

    seq_len: int
    examples: int
    dropped_no_loss_tokens: int = Field(
        description="examples whose prompt fills the first seq_len tokens, so truncation leaves "
        "them no token to learn from (the worker masks prompts out of the loss) and drops them"
    )
    seq_len_keeping_all: int | None = Field(description="smallest seq_len that keeps every one")
    seq_len_keeping_95pct: int | None = Field(description="smallest seq_len that keeps 95%")
    approximate: bool = Field(
        False, description="token counts from characters / 4 (no model_path at upload)"
    )
    tokenizer: str | None = Field(
        None, description="what counted the tokens at upload: a model folder, or 'approximate'"
    )
    loss_tokens: int | None = Field(
        None,
        description="labels the worker learns from at this seq_len, over every example (train "
        "and held-out eval, no packing): the worker's actuals.data.loss_tokens for the same "
        "tokenizer. None for datasets uploaded before it was recorded",
    )


class EstimateOut(EstimateResult):
    """A stored estimate: the estimator's answer with its id and the request it answered."""

    id: str
    created_at: UtcInstant
    model_ref: str
    dataset_id: str | None = None
    dataset_check: DatasetCheckOut | None = Field(
        None, description="with dataset_id (not packed): what truncation to seq_len drops"
    )
    request: dict[str, Any]
