"""The estimate of one method, frozen onto a job, and the signed errors of the actuals against it.

A stored estimate (`EstimateResult.model_dump(mode="json")`) is read back through its model.
When a job caps its optimizer steps below what the estimate planned, the step-proportional part
of the time (and so GPU-hours, cost and FLOPs) is scaled to them, down or up; start-up and saving
are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput
from app.estimator.results import EstimateResult, MethodResult
from app.estimator.spec import Method
from app.models.peak import compared_peak

# The estimated quantities that have a metered counterpart: (name, est key, act column suffix).
ERROR_QUANTITIES = ("cost_usd", "gpu_hours", "peak_bytes", "artifact_bytes")
# Step-independent quantities: still comparable when a run stopped early (budget, cancel).
FULL_RUN_ONLY = frozenset({"cost_usd", "gpu_hours"})


@dataclass(frozen=True)
class Snapshot:
    """What a job needs from the estimate of its method, after any max_steps scaling."""

    method_result: MethodResult
    gpu: str
    num_gpus: int
    nodes: int  # worker nodes the plan's devices span
    provider: str | None
    pricing: str
    price_per_gpu_hour: float | None
    cost_usd: float | None
    gpu_hours: float
    hours: float
    peak_bytes: int  # what must fit on one GPU
    allocated_bytes: int | None  # the estimate's torch.cuda.max_memory_allocated
    reserved_bytes: int | None  # and max_memory_reserved
    artifact_bytes: int
    steps: int
    flops_per_token: float | None
    fits: bool
    runnable: bool = True

    def planned_training(self) -> dict[str, Any]:
        """The training settings the plan chose (its memory levers): what the job runs with."""
        chosen = self.method_result.training
        if chosen is None:
            return {}  # an estimate stored before plans named their levers
        out = chosen.model_dump(exclude={"levers"}, exclude_none=True)
        return out

    def as_json(self) -> dict[str, Any]:
        """The snapshot stored on the job: the method's estimate plus the scaled figures."""
        return {
            **self.method_result.model_dump(mode="json"),
            "job_scaled": {
                "steps": self.steps,
                "hours": self.hours,
                "gpu_hours": self.gpu_hours,
                "cost_usd": self.cost_usd,
            },
        }


def take(
    result: EstimateResult, *, method: str, max_steps: int | None, data_fraction: float = 1.0
) -> Snapshot:
    """The snapshot of `method` from an estimate result, scaled to `max_steps` if given, else to
    the steps a run on `data_fraction` of the examples takes.

    The worker runs exactly `max_steps` optimizer steps when it is set (HF Trainer's rule: it
    overrides the epochs), so the step part scales up as well as down.
    """
    mr = result.results.get(Method(method))
    if mr is None:
        have = ", ".join(sorted(result.results)) or "none"
        raise InvalidInput(
            f"the estimate has no result for method {method!r} (it has: {have})", field="method"
        )
    steps, hours, gpu_hours, cost = mr.steps, mr.hours, mr.gpu_hours, mr.cost_usd
    overhead_h = mr.time.overhead_s / 3600.0
    if max_steps is None and data_fraction < 1:
        max_steps = max(1, math.ceil(steps * data_fraction))
    if max_steps is not None and 0 < max_steps != steps and hours > 0:
        fraction = max_steps / steps
        scaled_hours = overhead_h + max(hours - overhead_h, 0.0) * fraction
        ratio = scaled_hours / hours
        hours, gpu_hours, steps = scaled_hours, gpu_hours * ratio, max_steps
        cost = cost * ratio if cost is not None else None
    tokens = result.dataset.processed_tokens
    return Snapshot(
        method_result=mr,
        gpu=mr.gpu,
        num_gpus=mr.num_gpus,
        nodes=mr.nodes,
        provider=mr.provider,
        pricing=mr.pricing,
        price_per_gpu_hour=mr.price_per_gpu_hour,
        cost_usd=cost,
        gpu_hours=gpu_hours,
        hours=hours,
        peak_bytes=mr.memory.per_gpu_bytes,
        allocated_bytes=mr.memory.allocated_bytes or None,
        reserved_bytes=mr.memory.reserved_bytes or None,
        artifact_bytes=mr.artifact_bytes,
        steps=steps,
        # the run's FLOPs over the tokens it processes (for MFU)
        flops_per_token=mr.flops / tokens if mr.flops > 0 and tokens > 0 else None,
        fits=mr.fits,
        runnable=mr.runnable,
    )


def signed_error_pct(estimated: float | None, actual: float | None) -> float | None:
    """(estimated - actual) / actual x 100; None when either is missing or actual is zero."""
    if estimated is None or actual is None or actual == 0:
        return None
    return (estimated - actual) / actual * 100.0


def errors(
    estimated: dict[str, float | int | None],
    actual: dict[str, float | int | None],
    *,
    full_run: bool,
) -> dict[str, Any]:
    """The error of each estimated quantity; time and money only when the run went to the end."""
    out: dict[str, Any] = {}
    for name in ERROR_QUANTITIES:
        if not full_run and name in FULL_RUN_ONLY:
            continue
        est, act = estimated.get(name), actual.get(name)
        out[name] = {
            "estimated": est,
            "actual": act,
            "error_pct": signed_error_pct(
                float(est) if est is not None else None, float(act) if act is not None else None
            ),
        }
    out["complete_run"] = full_run
    return out


def peak_error(
    *,
    kind: str | None,
    per_gpu_bytes: int | None,
    allocated_bytes: int | None,
    actual: int | None,
) -> dict[str, Any]:
    """The peak memory's error, like with like, naming what was compared with what."""
    estimated, compared = compared_peak(
        kind, per_gpu_bytes=per_gpu_bytes, allocated_bytes=allocated_bytes
    )
    return {
        "estimated": estimated,
        "actual": actual,
        "error_pct": signed_error_pct(
            float(estimated) if estimated is not None else None,
            float(actual) if actual is not None else None,
        ),
        "estimated_quantity": compared,
        "actual_quantity": kind,
    }
