"""Which estimated memory figure a job's metered peak is compared with: like with like.

The worker meters torch.cuda.max_memory_allocated on a GPU and the process's peak resident set on
the CPU (`act_peak_kind`). The estimate has three figures (app/estimator/results.py `MemoryOut`):
allocated, reserved, and what must fit (per_gpu_bytes, with the CUDA context). Comparing the
allocated peak with per_gpu_bytes would show a perfect estimate as ~10% high.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case

from app.models.job import Job

# What a job's metered peak measures, and so which estimated figure it is compared with:
# torch's allocator peak with the estimate's allocated bytes; a CPU process's peak resident set
# (the whole process: interpreter, libraries, data) with what must fit, per_gpu_bytes.
ALLOCATED_PEAK_KIND = "cuda_allocated"  # torch.cuda.max_memory_allocated
PEAK_COMPARED = {ALLOCATED_PEAK_KIND: "allocated_bytes", "cpu_rss": "per_gpu_bytes"}


def compared_peak(
    kind: str | None, *, per_gpu_bytes: int | None, allocated_bytes: int | None
) -> tuple[int | None, str]:
    """The estimated bytes a metered peak of `kind` is compared with, and their name."""
    if PEAK_COMPARED.get(kind or "") == "allocated_bytes" and allocated_bytes is not None:
        return allocated_bytes, "allocated_bytes"
    return per_gpu_bytes, "per_gpu_bytes"


def peak_estimate_column() -> Any:
    """SQL for the estimated bytes each job's metered peak is compared with (compared_peak)."""
    vs_allocated = and_(
        Job.act_peak_kind == ALLOCATED_PEAK_KIND, Job.est_allocated_bytes.is_not(None)
    )
    return case((vs_allocated, Job.est_allocated_bytes), else_=Job.est_peak_bytes)


def vs_allocated_column() -> Any:
    """SQL: true where a job's peak is compared with the estimate's allocated bytes."""
    return and_(Job.act_peak_kind == ALLOCATED_PEAK_KIND, Job.est_allocated_bytes.is_not(None))
