"""What the training child is launched with: the job's `JobSpec` and this attempt's `RunContext`.

The spec is the one the API validated and stored (app/jobs/spec.py); the run context is what only
the worker knows when it starts an attempt. Both cross the pipe to the child as one `Launch`,
dumped to JSON by the parent and validated again by the child (`parse_launch`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.jobs.spec import JobSpec
from worker.training.errors import JobSpecError

DEFAULT_MAX_DATASET_BYTES = 8 * 1024**3  # decompressed; far above any upload limit we configure
# What is left of a budget spent by earlier attempts: positive, so a retry whose budget is gone
# stops at its first budget check and ends budget_exceeded.
MIN_BUDGET_USD = 1e-9


class RunContext(BaseModel):
    """One attempt of a job on this worker: where its inputs are and when its billing started."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    dataset_path: str = Field(description="the dataset copied to this worker's disk")
    dataset_columns: dict[str, str] | None = Field(
        None, description="the upload's mapping of the file's columns to record fields"
    )
    started_at: float = Field(
        default_factory=time.time, description="epoch seconds the attempt started (billing)"
    )
    billed_usd: float = Field(0.0, ge=0, description="what earlier attempts of the job cost")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    offline: bool | None = Field(None, description="default: HF_HUB_OFFLINE from the environment")
    model_roots: list[str] | None = Field(None, description="if set, model.path must be inside")
    max_dataset_bytes: int = Field(DEFAULT_MAX_DATASET_BYTES, gt=0)
    peak_flops_per_gpu: float | None = Field(None, gt=0, description="default: the catalog's")
    # A job across nodes (spec.nodes > 1): this node's place and where the ranks meet.
    node_index: int = Field(0, ge=0, description="this worker's node of the job; 0 hosts")
    rendezvous: str | None = Field(
        None, description="host:port of the rendezvous store on node 0 (jobs across nodes)"
    )


class Launch(BaseModel):
    """A job spec and the attempt that runs it: everything the training child needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: JobSpec
    run: RunContext

    @model_validator(mode="after")
    def _placed(self) -> Launch:
        if self.spec.nodes > 1 and self.run.rendezvous is None:
            raise ValueError("a job across nodes needs run.rendezvous (host:port of node 0)")
        if self.run.node_index >= self.spec.nodes:
            raise ValueError(f"run.node_index must be below spec.nodes ({self.spec.nodes})")
        return self

    @property
    def budget_usd(self) -> float | None:
        """This attempt's budget: the job's, less what earlier attempts were billed."""
        if self.spec.max_cost_usd is None:
            return None
        return max(self.spec.max_cost_usd - self.run.billed_usd, MIN_BUDGET_USD)


def parse_launch(raw: dict[str, Any]) -> Launch:
    """Validate a launch received as JSON; raise JobSpecError naming the bad fields."""
    try:
        return Launch.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        )
        raise JobSpecError(f"invalid job spec: {problems}") from exc
