"""Response bodies of the calibration routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.kit.instants import UtcInstant


class CalibrationGroupOut(BaseModel):
    """The fit of one (GPU, method) and whether estimates use it."""

    gpu: str
    method: str
    used_by_estimates: bool = Field(description="true once a value rests on enough jobs")
    prior_mfu: float | None = Field(description="the efficiency estimates use without a fit")
    mfu: float | None = Field(
        description="fitted efficiency of large matmuls (fraction of dense peak); smaller "
        "matmuls reach less of it (app/estimator/efficiency.py)"
    )
    mfu_jobs: int
    mfu_outliers: int
    mfu_capped: bool = Field(description="the fit exceeded 1 and was capped at 1")
    run_overhead_s: float | None = Field(
        None,
        description="fitted seconds of a run outside its training loop (start-up, evaluation, "
        "saving): the weighted median of wall - train over the jobs",
    )
    host_scale: float | None = Field(
        None,
        description="fitted factor on the modelled per-step floor (the host's time to issue a "
        "step's work): measured / modelled; near 1 when the jobs cannot tell it apart",
    )
    time_jobs: int = Field(0, description="jobs that metered their training loop")
    time_worse_than_prior: bool = Field(
        False,
        description="fitted on the group's older jobs, the time terms estimated its newest "
        "(30%) worse than their own prior estimates did: estimates keep the prior time",
    )
    efficiency_sources: dict[str, int] = Field(
        description="how each job's efficiency was derived: wall_time (estimator's time model "
        "against measured wall time), hours_ratio, or measured_mfu (the worker's figure)"
    )
    memory_factor: float | None = Field(description="measured peak / estimated peak")
    memory_jobs: int
    memory_outliers: int
    peak_kind: str | None = Field(
        description="what the measured peaks are: CUDA reserved/allocated bytes, or the "
        "process's peak RSS on CPU (not device memory)"
    )
    eligible_jobs: int = Field(description="succeeded full runs read for this group")
    jobs: int = Field(description="distinct jobs the used values rest on")


class CalibrationOut(BaseModel):
    """Every fitted (GPU, method) and the rules the fit follows."""

    min_jobs: int
    outlier_rule: str
    max_jobs_per_group: int
    groups: list[CalibrationGroupOut]


class QuantityEval(BaseModel):
    """Error of one quantity on the held-out jobs, before and after calibration."""

    n: int
    before_mape_pct: float | None
    after_mape_pct: float | None
    before_mean_pct_error: float | None
    after_mean_pct_error: float | None


class EvalSummary(BaseModel):
    """Before/after errors over a set of held-out jobs."""

    gpu: str | None = None
    method: str | None = None
    jobs: int
    calibrated_jobs: int = Field(description="held-out jobs whose group had a usable fit")
    gpu_hours: QuantityEval
    cost_usd: QuantityEval
    peak_bytes: QuantityEval


class JobEvalOut(BaseModel):
    """One held-out job: actual, estimate as made, and as the calibration would have made it."""

    job_id: str
    gpu: str
    method: str
    finished_at: UtcInstant
    calibrated: bool
    actual_gpu_hours: float | None
    before_gpu_hours: float | None
    after_gpu_hours: float | None
    actual_cost_usd: float | None
    before_cost_usd: float | None
    after_cost_usd: float | None
    actual_peak_bytes: int | None
    before_peak_bytes: int | None
    after_peak_bytes: float | None


class EvaluationOut(BaseModel):
    """Calibration measured on jobs it never saw: fitted on older jobs, scored on newer ones."""

    split_at: UtcInstant | None = Field(description="fit on jobs finished before, score at/after")
    fit_jobs: int = Field(description="jobs the used fits rest on (all finished before split_at)")
    heldout_jobs: int
    overlap: int = Field(description="jobs both read by the fit and scored; 0 by construction")
    before: str = Field(description="what 'before' means")
    after: str = Field(description="what 'after' means")
    overall: EvalSummary | None
    groups: list[EvalSummary]
    jobs: list[JobEvalOut] | None = Field(None, description="per job, with include_jobs=true")
