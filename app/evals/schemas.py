"""Response bodies of the eval routes: a job's eval curve and a paired comparison of two jobs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.kit.instants import UtcInstant


class EvalPointOut(BaseModel):
    """One evaluation of a job on its held-out set (step 0: the base model, before training)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    attempt: int
    created_at: UtcInstant
    step: int
    total_steps: int
    tokens: int = Field(description="real tokens trained on before this point")
    elapsed_s: float
    accrued_cost_usd: float = Field(description="$ so far: what the job had cost at this point")
    final: bool = Field(description="the evaluation of the completed run")
    eval_set_id: str = Field(description="content hash of the held-out items scored")
    loss: float = Field(description="mean loss per token over the held-out items")
    loss_se: float | None = Field(description="its standard error over the items")
    token_accuracy: float | None = Field(description="share of tokens predicted right")
    items: int
    loss_tokens: int


class EvalPage(BaseModel):
    """A job's eval curve after a given point id, in order; pass `next_after` back to continue."""

    items: list[EvalPointOut]
    next_after: int | None


class PairedComparison(BaseModel):
    """Two jobs' final evaluations on the same held-out items, compared item by item."""

    job_id: str
    other_job_id: str
    eval_set_id: str
    items: int
    loss: float = Field(description="this job's final eval loss")
    other_loss: float
    difference: float = Field(description="loss - other_loss (negative: this job is better)")
    se: float = Field(description="the paired standard error of the difference")
    z: float | None = Field(description="difference / se")
