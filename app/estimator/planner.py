"""The planner: per method, the cheapest (GPU, count, nodes, provider, pricing) that fits.

Every (GPU, count) is evaluated once: memory per GPU (calibrated where jobs have run), whether
the GPU can run the precision at all, wall time, and then every price row. Options that fit are
ranked by cost (then time); cheaper options that do not fit are kept with the reason, so the
answer says both what to rent and why not the cheaper thing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.estimator.calibration_types import CalibrationTable, lookup
from app.estimator.catalog_types import Catalog, GpuSpec, PricingKind
from app.estimator.compute import TimeBreakdown, compute_dtype, estimate_time
from app.estimator.efficiency import mfu_prior
from app.estimator.intervals import Basis
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.pricing import RunCost, run_cost
from app.estimator.results import Plan, range_of
from app.estimator.spec import MAX_GPUS_PER_NODE, LoraSpec, Method, QLoraSpec, TrainingSpec
from app.estimator.workload import Workload

GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64)  # up to 8 nodes of 8: beyond that, talk to the provider
PLAN_LIMIT = 8  # fitting options listed per method; the rest are never the cheapest
GB = 1e9


class MemoryLike(Protocol):
    """What the planner reads from a memory estimate."""

    @property
    def per_gpu_bytes(self) -> int: ...
    @property
    def low_bytes(self) -> int: ...
    @property
    def high_bytes(self) -> int: ...
    @property
    def strategy(self) -> str: ...
    @property
    def breakdown(self) -> Any: ...


# (number of GPUs, bytes one GPU offers) -> memory estimate; with the GPU's bytes, automatic
# sharding picks the least sharded strategy that fits in them
MemoryFn = Callable[[int, int | None], MemoryLike]


@dataclass
class PlanContext:
    """Everything fixed for one method while GPUs and counts vary; caches what it computes."""

    analysis: ModelAnalysis
    method: Method
    training: TrainingSpec
    qlora: QLoraSpec
    workload: Workload
    lora_trainable: int
    artifact_bytes: int
    memory: MemoryFn
    lora: LoraSpec | None = None
    calibration: CalibrationTable | None = None
    _memory: dict[tuple[int, int | None], MemoryLike] = field(default_factory=dict, repr=False)
    _candidates: dict[tuple[str, int], Candidate] = field(default_factory=dict, repr=False)

    def memory_for(self, num_gpus: int, gpu_memory_bytes: int | None = None) -> MemoryLike:
        """The (uncalibrated) memory estimate on `num_gpus` GPUs of `gpu_memory_bytes` each,
        computed once."""
        key = (num_gpus, gpu_memory_bytes)
        if key not in self._memory:
            self._memory[key] = self.memory(num_gpus, gpu_memory_bytes)
        return self._memory[key]


@dataclass(frozen=True)
class Candidate:
    """One (GPU, count) evaluated: calibrated memory, fit, time; price comes later."""

    gpu: GpuSpec
    num_gpus: int
    memory: MemoryLike
    memory_factor: float
    time: TimeBreakdown | None  # None when the GPU cannot run the precision
    fits: bool
    reason: str | None
    basis: Basis
    calibration_jobs: int

    @property
    def nodes(self) -> int:
        """Machines of up to 8 GPUs."""
        return math.ceil(self.num_gpus / MAX_GPUS_PER_NODE)

    @property
    def per_gpu_bytes(self) -> int:
        """Expected peak bytes per GPU, calibrated."""
        return int(self.memory.per_gpu_bytes * self.memory_factor)

    @property
    def tight(self) -> bool:
        """Fits at the expected peak, but not at the high bound of the memory estimate."""
        return self.fits and self.memory.high_bytes * self.memory_factor > self.gpu.memory_bytes

    @property
    def hours(self) -> float:
        """Wall-clock hours (infinite when it cannot run)."""
        return self.time.hours if self.time is not None else math.inf

    @property
    def mfu(self) -> float:
        """Efficiency used for the time."""
        return self.time.mfu if self.time is not None else 0.0


def evaluate(ctx: PlanContext, gpu: GpuSpec, num_gpus: int) -> Candidate:
    """Memory, fit and time of `ctx.method` on `num_gpus` x `gpu` (memoized in `ctx`)."""
    key = (gpu.id, num_gpus)
    if key in ctx._candidates:
        return ctx._candidates[key]
    cal = lookup(ctx.calibration, gpu.id, ctx.method)
    factor = cal.memory_factor if cal is not None and cal.memory_factor is not None else 1.0
    # the strategy must fit once calibrated: offer the estimate the GPU's bytes / factor
    memory = ctx.memory_for(num_gpus, int(gpu.memory_bytes / factor))
    mfu = (
        cal.mfu if cal is not None and cal.mfu is not None else mfu_prior(gpu.mfu_class, ctx.method)
    )
    basis: Basis = "calibrated" if cal is not None else "prior"
    dtype = compute_dtype(ctx.training.precision)
    reason: str | None = None
    time: TimeBreakdown | None = None
    if (dtype == "bf16" and not gpu.supports_bf16) or gpu.peak_flops(dtype) <= 0:
        reason = f"{gpu.id} has no {dtype} support (precision {ctx.training.precision})"
    else:
        time = estimate_time(
            analysis=ctx.analysis,
            method=ctx.method,
            training=ctx.training,
            qlora=ctx.qlora,
            workload=ctx.workload,
            lora_trainable=ctx.lora_trainable,
            gpu=gpu,
            num_gpus=num_gpus,
            strategy=memory.strategy,
            mfu=mfu,
            artifact_bytes=ctx.artifact_bytes,
            lora=ctx.lora,
            run_overhead_s=cal.run_overhead_s if cal is not None else None,
            host_scale=(cal.host_scale or 1.0) if cal is not None else 1.0,
        )
        need = memory.per_gpu_bytes * factor
        if need > gpu.memory_bytes:
            reason = (
                f"needs {need / GB:.1f} GB per GPU ({memory.strategy} on {num_gpus}); "
                f"{gpu.id} has {gpu.memory_gb:.1f} GB"
            )
    candidate = Candidate(
        gpu=gpu,
        num_gpus=num_gpus,
        memory=memory,
        memory_factor=factor,
        time=time,
        fits=reason is None,
        reason=reason,
        basis=basis,
        calibration_jobs=cal.jobs if cal is not None else 0,
    )
    ctx._candidates[key] = candidate
    return candidate


def costs(
    candidate: Candidate,
    catalog: Catalog,
    *,
    provider: str | None,
    pricing: PricingKind | None,
) -> list[RunCost]:
    """What `candidate` costs at each matching price row, cheapest first."""
    if candidate.time is None:
        return []
    rows = catalog.prices_for(candidate.gpu.id, provider=provider, pricing=pricing)
    out = [run_cost(hours=candidate.hours, num_gpus=candidate.num_gpus, price=r) for r in rows]
    return sorted(out, key=lambda c: (c.cost_usd, c.provider))


def to_plan(
    candidate: Candidate, cost: RunCost | None, *, pricing: str, reason: str | None
) -> Plan:
    """A `Plan` row for `candidate` at `cost` (None: unpriced)."""
    # A configuration that cannot run (no bf16 on the GPU) has no time: 0 hours, like the
    # method's result, since JSON (and PostgreSQL's json type) has no infinity.
    hours = candidate.hours if candidate.time is not None else 0.0
    return Plan(
        gpu=candidate.gpu.id,
        num_gpus=candidate.num_gpus,
        nodes=candidate.nodes,
        provider=cost.provider if cost else None,
        pricing=cost.pricing if cost else pricing,
        fits=reason is None,
        tight=reason is None and candidate.tight,
        reason=reason,
        per_gpu_bytes=candidate.per_gpu_bytes,
        gpu_memory_bytes=candidate.gpu.memory_bytes,
        strategy=candidate.memory.strategy,
        hours=hours,
        billed_gpus=cost.billed_gpus if cost else candidate.num_gpus,
        gpu_hours=cost.gpu_hours if cost else hours * candidate.num_gpus,
        price_per_gpu_hour=cost.price_per_gpu_hour if cost else None,
        cost_usd=cost.cost_usd if cost else None,
        hours_range=range_of(hours, candidate.basis) if candidate.time is not None else None,
        cost_usd_range=range_of(cost.cost_usd if cost else None, candidate.basis),
        region=cost.region or None if cost else None,
        instance=cost.instance or None if cost else None,
        price_as_of=cost.price_as_of if cost else None,
        price_source=cost.price_source if cost else None,
        mfu=candidate.mfu,
        basis=candidate.basis,
    )


def plan_method(
    ctx: PlanContext,
    catalog: Catalog,
    *,
    gpus: Iterable[GpuSpec],
    provider: str | None,
    pricing: PricingKind | None,
    available: Mapping[str, int | None] | None = None,
    counts: Iterable[int] = GPU_COUNTS,
) -> list[Plan]:
    """Fitting options ranked by cost, then each cheaper non-fitting option with its reason."""
    fitting: list[tuple[float, float, int, Candidate, RunCost]] = []
    rejected: list[tuple[float, Plan]] = []
    for gpu in gpus:
        cap = available.get(gpu.id) if available is not None else None
        best_reject: tuple[float, Plan] | None = None
        for n in counts:
            if cap is not None and n > cap:
                break
            candidate = evaluate(ctx, gpu, n)
            priced = costs(candidate, catalog, provider=provider, pricing=pricing)
            if candidate.fits and priced:
                fitting.extend((c.cost_usd, candidate.hours, n, candidate, c) for c in priced)
                continue
            reason = candidate.reason or _no_price(gpu, provider, pricing)
            cheapest = priced[0] if priced else None
            ranked = cheapest.cost_usd if cheapest else math.inf
            if best_reject is None or ranked < best_reject[0]:
                plan = to_plan(candidate, cheapest, pricing=pricing or "on_demand", reason=reason)
                best_reject = (ranked, plan)
        if best_reject is not None:
            rejected.append(best_reject)
    fitting.sort(key=lambda f: f[:3])
    top = [
        to_plan(cand, cost, pricing=cost.pricing, reason=None)
        for *_, cand, cost in fitting[:PLAN_LIMIT]
    ]
    bar = fitting[0][0] if fitting else math.inf
    cheaper = [plan for ranked, plan in sorted(rejected, key=lambda r: r[0]) if ranked < bar]
    if not top:  # nothing fits: say why for every GPU considered
        cheaper = [plan for _, plan in sorted(rejected, key=lambda r: r[0])]
    return top + cheaper


def _no_price(gpu: GpuSpec, provider: str | None, pricing: str | None) -> str:
    where = f" at {provider}" if provider else ""
    kind = f"{pricing} " if pricing else ""
    return f"no {kind}price for {gpu.id}{where} in the catalog"
