"""What an attempt metered, written onto the job row column by column, and its estimate errors."""

from __future__ import annotations

from dataclasses import dataclass

from app.jobs import snapshot
from app.jobs.actuals import JobActuals
from app.models import Job


@dataclass(frozen=True)
class Artifact:
    """The attempt's artifact in storage."""

    url: str
    total_bytes: int


@dataclass(frozen=True)
class Metered:
    """What an ending attempt leaves: its actuals (None when nothing was metered), its artifact."""

    actuals: JobActuals | None
    artifact: Artifact | None = None


def record(job: Job, result: Metered, *, full_run: bool) -> None:
    """Store `result` on `job`: the actual columns, the artifact, the errors against the estimate.

    Time and money are compared with the estimate only for a run that went to the end.
    """
    act = result.actuals
    job.act_wall_s = act.wall_s if act else None
    job.act_gpu_hours = act.gpu_hours if act else None
    job.act_peak_bytes = act.peak_memory_bytes if act else None
    job.act_peak_kind = act.peak_memory_kind if act else None
    job.act_reserved_bytes = act.peak_memory_reserved_bytes if act else None
    job.act_device_peak_bytes = act.peak_memory_device_bytes if act else None
    job.act_tokens = act.tokens if act else None
    job.act_tokens_per_s = act.tokens_per_s if act else None
    job.act_mfu = act.mfu if act else None
    job.act_energy_kwh = act.energy_kwh if act else None
    job.act_cost_usd = act.cost_usd if act else None
    job.eval_loss = act.eval_loss if act else None
    if result.artifact is not None:
        job.artifact_path = result.artifact.url
        job.artifact_bytes = result.artifact.total_bytes
    job.errors = snapshot.errors(
        {
            "cost_usd": job.est_cost_usd,
            "gpu_hours": job.est_gpu_hours,
            "peak_bytes": job.est_peak_bytes,
            "artifact_bytes": job.est_artifact_bytes,
        },
        {
            "cost_usd": job.act_cost_usd,
            "gpu_hours": job.act_gpu_hours,
            "peak_bytes": job.act_peak_bytes,
            # the weights the estimate sized, not the tokenizer and configs saved beside them
            "artifact_bytes": act.artifact_weights_bytes if act else None,
        },
        full_run=full_run,
    )
    job.errors["peak_bytes"] = snapshot.peak_error(
        kind=job.act_peak_kind,
        per_gpu_bytes=job.est_peak_bytes,
        allocated_bytes=job.est_allocated_bytes,
        actual=job.act_peak_bytes,
    )
    # The child's artifact_path is its local folder; the stored URL is the column.
    job.actuals = act.model_dump(mode="json", exclude={"artifact_path"}) if act else None
