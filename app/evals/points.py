"""One point of a job's eval curve, as the training child sends it and the worker stores it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalPoint(BaseModel):
    """The held-out set scored after `step` optimizer steps (step 0: the base model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["eval"] = "eval"
    step: int = Field(ge=0)
    total_steps: int = Field(ge=0)
    tokens: int = Field(ge=0, description="real tokens trained on before this point")
    elapsed_s: float = Field(description="since the attempt started (the billing clock)")
    accrued_cost_usd: float = Field(ge=0, description="what the job had cost at this point")
    final: bool = Field(description="the evaluation of the completed run")
    eval_set_id: str = Field(max_length=64)
    loss: float = Field(description="token-weighted mean loss over the items")
    loss_se: float | None = Field(description="its standard error over the items")
    token_accuracy: float | None
    items: int = Field(ge=1)
    loss_tokens: int = Field(ge=0)
    item_loss_sums: list[float] = Field(description="per item, in eval-set order")
    item_tokens: list[int]
