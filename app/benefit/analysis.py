"""What a study concluded, as stored on its row once every pilot ended, and read back as evidence.

The studies service writes `StudyAnalysis.model_dump(mode="json")` into `studies.result`; the
studies routes and the estimates' evidence (`app/benefit/evidence.py`) read it back through this
type, never with `.get` chains.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.estimator.spec import Method


class Interval(BaseModel):
    """A value with the low and high ends of its 80% interval."""

    value: float
    low: float
    high: float


class FitOut(BaseModel):
    """E + B * D^-beta fitted to a candidate's pilots, and how well it fits."""

    e: float
    b: float
    beta: float
    n_pilots: int
    residual_rmse: float
    poor: str | None = Field(description="why the fit is not to be trusted, or null")


class CandidateAnalysis(BaseModel):
    """What the pilots predict for one candidate on the whole data."""

    name: str
    method: Method
    predicted_eval_loss: Interval | None
    predicted_cost_usd: Interval | None
    fit: FitOut | None
    prob_above_target: float | None = Field(
        description="probability that its full-data eval loss is above the target"
    )
    note: str | None = Field(None, description="why there is no prediction")


class RecommendationOut(BaseModel):
    """The candidate to run on the whole data (null when none can be), and why."""

    candidate: int | None = Field(description="its index in candidates")
    name: str | None
    method: Method | None
    reasons: list[str]


class StudyAnalysis(BaseModel):
    """The analysis stored on a study once every pilot has ended."""

    base_eval_loss: float | None
    target_eval_loss: float | None
    candidates: list[CandidateAnalysis]
    frontier: list[int]
    recommendation: RecommendationOut
