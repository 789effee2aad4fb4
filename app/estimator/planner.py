"""The planner: per method, the cheapest runnable (GPU, count, provider, pricing) that fits.

Every (GPU, count) is evaluated once: the memory levers the request leaves open are tried
(levers.py) and the fastest setting that fits is kept, so a lever costs time only where memory
needs it; then memory per GPU (calibrated where jobs have run), whether the GPU can run the
precision at all, wall time, and every price row. Options that fit and that a worker can run
(fleet.py) are ranked by cost (then time); an option that pays for idle GPUs of a whole
instance gives way to the same offer's data-parallel run over every GPU it bills. Fitting
options no worker can run follow, marked; cheaper options that do not fit are kept with the
reason, so the answer says what to rent and why not the cheaper thing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.estimator.calibration_types import Calibration, CalibrationTable, lookup
from app.estimator.catalog_types import Catalog, GpuSpec, PricingKind
from app.estimator.compute import TimeBreakdown, compute_dtype, estimate_time
from app.estimator.efficiency import MEASURED_MATMUL_SHARE, mfu_prior
from app.estimator.fleet import ANY, Fleet
from app.estimator.intervals import Basis
from app.estimator.levers import (
    HOST_LINK_BYTES_PER_S,
    LEVER_NAMES,
    LeverChoice,
    lever_choices,
)
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.pricing import RunCost, run_cost
from app.estimator.results import LeverName, Plan, range_of
from app.estimator.spec import DatasetShape, LoraSpec, Method, QLoraSpec, TrainingSpec
from app.estimator.speed import DeviceSpeed
from app.estimator.workload import Workload, build_workload

GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64)  # up to 8 nodes of 8: beyond that, talk to the provider
PLAN_LIMIT = 8  # fitting options listed per method; the rest are never the cheapest
# A lever memory does not need stays off unless it saves more than this share of the run's
# time: 8-bit states and bf16 adapters trade a little precision, which a rounding-error gain
# does not justify.
LEVER_TIME_TOLERANCE = 0.01
GIB = 1024**3


class MemoryLike(Protocol):
    """What the planner reads from a memory estimate."""

    @property
    def per_gpu_bytes(self) -> int: ...
    @property
    def allocated_bytes(self) -> int: ...
    @property
    def reserved_bytes(self) -> int: ...
    @property
    def low_bytes(self) -> int: ...
    @property
    def high_bytes(self) -> int: ...
    @property
    def strategy(self) -> str: ...
    @property
    def breakdown(self) -> Any: ...
    @property
    def pageable_bytes(self) -> int: ...
    @property
    def must_fit_bytes(self) -> int: ...


# (training with every lever decided, number of GPUs, bytes one GPU offers) -> memory estimate;
# with the GPU's bytes, automatic sharding picks the least sharded strategy that fits in them
MemoryFn = Callable[[TrainingSpec, int, int | None], MemoryLike]


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
    fleet: Fleet = ANY
    dataset: DatasetShape | None = None  # to count tokens again for a micro-batch split
    max_positions: int | None = None
    speeds: Mapping[str, DeviceSpeed] = field(default_factory=dict)  # measured by workers
    _memory: dict[tuple[TrainingSpec, int, int | None], MemoryLike] = field(
        default_factory=dict, repr=False
    )
    _workloads: dict[int, Workload] = field(default_factory=dict, repr=False)
    _candidates: dict[tuple[str, int], Candidate] = field(default_factory=dict, repr=False)

    def memory_for(
        self, training: TrainingSpec, num_gpus: int, gpu_memory_bytes: int | None = None
    ) -> MemoryLike:
        """The (uncalibrated) memory estimate of `training` on `num_gpus` GPUs of
        `gpu_memory_bytes` each, computed once."""
        key = (training, num_gpus, gpu_memory_bytes)
        if key not in self._memory:
            self._memory[key] = self.memory(training, num_gpus, gpu_memory_bytes)
        return self._memory[key]

    def workload_for(self, training: TrainingSpec) -> Workload:
        """The workload at `training`'s micro-batch (padding depends on it)."""
        size = training.micro_batch_size
        if size == self.workload.micro_batch_size or self.dataset is None:
            return self.workload
        if size not in self._workloads:
            self._workloads[size] = build_workload(
                dataset=self.dataset, training=training, max_position_embeddings=self.max_positions
            )
        return self._workloads[size]

    def choices(self, *, pageable: bool) -> list[LeverChoice]:
        """The settings of the levers the request leaves open, plain first."""
        return lever_choices(self.training, method=self.method, pageable=pageable)


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
    choice: LeverChoice  # the levers this configuration runs with
    nodes: int = 1
    unrunnable: str | None = None  # why no worker can run it (None: runnable)

    @property
    def training(self) -> TrainingSpec:
        """The training settings the job runs with, every lever decided."""
        return self.choice.training

    @property
    def runnable(self) -> bool:
        """A worker of the fleet can run it."""
        return self.unrunnable is None

    @property
    def per_gpu_bytes(self) -> int:
        """Expected peak bytes per GPU, calibrated."""
        return int(self.memory.per_gpu_bytes * self.memory_factor)

    @property
    def tight(self) -> bool:
        """Fits at the expected peak, but not at the high bound of the memory estimate."""
        high = (self.memory.high_bytes - self.memory.pageable_bytes) * self.memory_factor
        return self.fits and high > self.gpu.memory_bytes

    @property
    def hours(self) -> float:
        """Wall-clock hours (infinite when it cannot run)."""
        return self.time.hours if self.time is not None else math.inf

    @property
    def mfu(self) -> float:
        """Efficiency used for the time."""
        return self.time.mfu if self.time is not None else 0.0


@dataclass(frozen=True)
class _Terms:
    """What calibration says for one (GPU, method), and the memory it offers the estimate."""

    cal: Calibration | None
    factor: float
    mfu: float
    offered: int
    speed: DeviceSpeed | None = None  # a worker's measurement of the device


def _terms(ctx: PlanContext, gpu: GpuSpec) -> _Terms:
    cal = lookup(ctx.calibration, gpu.id, ctx.method)
    factor = cal.memory_factor if cal is not None and cal.memory_factor is not None else 1.0
    # a worker's measurement of the device stands in for the datasheet; calibration then fits
    # its efficiency and floor factor on top of the same figures its jobs were estimated with
    speed = ctx.speeds.get(gpu.id)
    if cal is not None and cal.mfu is not None:
        mfu = cal.mfu
    elif speed is not None:
        mfu = MEASURED_MATMUL_SHARE
    else:
        mfu = mfu_prior(gpu.mfu_class, ctx.method)
    # the strategy must fit once calibrated: offer the estimate the GPU's bytes / factor
    return _Terms(cal, factor, mfu, int(gpu.memory_bytes / factor), speed)


def memory_of(
    ctx: PlanContext, gpu: GpuSpec, num_gpus: int, training: TrainingSpec
) -> tuple[MemoryLike, float]:
    """The memory estimate of `training` on `num_gpus` x `gpu`, and the calibrated factor."""
    terms = _terms(ctx, gpu)
    return ctx.memory_for(training, num_gpus, terms.offered), terms.factor


def fits_gpu(ctx: PlanContext, gpu: GpuSpec, num_gpus: int, training: TrainingSpec) -> bool:
    """Whether `training` fits `num_gpus` x `gpu` (what may page out need not)."""
    memory, factor = memory_of(ctx, gpu, num_gpus, training)
    return memory.must_fit_bytes * factor <= gpu.memory_bytes


def time_of(ctx: PlanContext, gpu: GpuSpec, num_gpus: int, training: TrainingSpec) -> TimeBreakdown:
    """Wall time of `training` on `num_gpus` x `gpu`, with the paging its memory implies."""
    terms = _terms(ctx, gpu)
    memory = ctx.memory_for(training, num_gpus, terms.offered)
    paged = 0.0
    if memory.pageable_bytes:  # what does not fit pages out while activations peak, and back
        paged = 2 * max(memory.per_gpu_bytes * terms.factor - gpu.memory_bytes, 0.0)
    cal = terms.cal
    return estimate_time(
        analysis=ctx.analysis,
        method=ctx.method,
        training=training,
        qlora=ctx.qlora,
        workload=ctx.workload_for(training),
        lora_trainable=ctx.lora_trainable,
        gpu=gpu,
        num_gpus=num_gpus,
        strategy=memory.strategy,
        mfu=terms.mfu,
        artifact_bytes=ctx.artifact_bytes,
        lora=ctx.lora,
        run_overhead_s=cal.run_overhead_s if cal is not None else None,
        host_scale=(cal.host_scale or 1.0) if cal is not None else 1.0,
        paging_s_per_step=paged / HOST_LINK_BYTES_PER_S,
        speed=terms.speed,
    )


def evaluate(ctx: PlanContext, gpu: GpuSpec, num_gpus: int) -> Candidate:
    """Memory, fit and time of `ctx.method` on `num_gpus` x `gpu` with the fastest setting of
    the open levers that fits (memoized in `ctx`)."""
    key = (gpu.id, num_gpus)
    if key in ctx._candidates:
        return ctx._candidates[key]
    terms = _terms(ctx, gpu)
    choices = ctx.choices(pageable=not gpu.is_cpu)
    dtype = compute_dtype(ctx.training.precision)
    no_dtype = (dtype == "bf16" and not gpu.supports_bf16) or gpu.peak_flops(dtype) <= 0
    if no_dtype or fits_gpu(ctx, gpu, num_gpus, choices[0].training):
        chosen, fitting = choices[0], True
    elif not fits_gpu(ctx, gpu, num_gpus, choices[-1].training):
        chosen, fitting = choices[-1], False  # not even with every lever on: the least it needs
    else:
        timed = [
            (time_of(ctx, gpu, num_gpus, c.training).total_s, c)
            for c in choices
            if fits_gpu(ctx, gpu, num_gpus, c.training)
        ]
        chosen, fitting = _fewest_levers(ctx, gpu, num_gpus, timed), True
    memory = ctx.memory_for(chosen.training, num_gpus, terms.offered)
    reason: str | None = None
    time: TimeBreakdown | None = None
    if no_dtype:
        reason = f"{gpu.id} has no {dtype} support (precision {ctx.training.precision})"
    else:
        time = time_of(ctx, gpu, num_gpus, chosen.training)
        if not fitting:
            need = memory.must_fit_bytes * terms.factor
            levers = f" even with {lever_words(chosen.levers)}" if chosen.levers else ""
            reason = (
                f"needs {need / GIB:.1f} GiB per GPU ({memory.strategy} on {num_gpus}){levers}; "
                f"{gpu.id} has {gpu.memory_gib:.1f} GiB"
            )
    candidate = Candidate(
        gpu=gpu,
        num_gpus=num_gpus,
        memory=memory,
        memory_factor=terms.factor,
        time=time,
        fits=reason is None,
        reason=reason,
        basis="calibrated" if terms.cal is not None else "prior",
        calibration_jobs=terms.cal.jobs if terms.cal is not None else 0,
        choice=chosen,
        nodes=ctx.fleet.nodes(num_gpus),
        unrunnable=ctx.fleet.why_not(gpu.id, num_gpus),
    )
    ctx._candidates[key] = candidate
    return candidate


def _fewest_levers(
    ctx: PlanContext, gpu: GpuSpec, num_gpus: int, timed: list[tuple[float, LeverChoice]]
) -> LeverChoice:
    """Of the settings that fit, among those within LEVER_TIME_TOLERANCE of the fastest: one
    that fits at the high memory bound too if there is one, then the fewest levers, then the
    fastest."""
    best = min(t for t, _ in timed)
    near = [
        (_tight(ctx, gpu, num_gpus, c.training), len(c.levers), t, i)
        for i, (t, c) in enumerate(timed)
        if t <= best * (1 + LEVER_TIME_TOLERANCE)
    ]
    return timed[min(near)[3]][1]


def _tight(ctx: PlanContext, gpu: GpuSpec, num_gpus: int, training: TrainingSpec) -> bool:
    memory, factor = memory_of(ctx, gpu, num_gpus, training)
    return (memory.high_bytes - memory.pageable_bytes) * factor > gpu.memory_bytes


def lever_words(levers: Iterable[LeverName]) -> str:
    """The levers' names in words: 'gradient checkpointing, 8-bit AdamW'."""
    return ", ".join(LEVER_NAMES[name] for name in levers)


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


def to_plan(candidate: Candidate, cost: RunCost | None, *, pricing: str) -> Plan:
    """A `Plan` row for `candidate` at `cost` (None: unpriced). One that does not fit has no
    cost: it cannot run as estimated."""
    # A configuration that cannot run (no bf16 on the GPU) has no time: 0 hours, like the
    # method's result, since JSON (and PostgreSQL's json type) has no infinity.
    hours = candidate.hours if candidate.time is not None else 0.0
    if not candidate.fits:
        cost = None
    idle = cost.billed_gpus - candidate.num_gpus if cost else 0
    return Plan(
        gpu=candidate.gpu.id,
        num_gpus=candidate.num_gpus,
        nodes=candidate.nodes,
        provider=cost.provider if cost else None,
        pricing=cost.pricing if cost else pricing,
        fits=candidate.fits,
        runnable=candidate.runnable,
        tight=candidate.tight,
        reason=candidate.reason or candidate.unrunnable,
        per_gpu_bytes=candidate.per_gpu_bytes,
        gpu_memory_bytes=candidate.gpu.memory_bytes,
        strategy=candidate.memory.strategy,
        levers=list(candidate.choice.levers),
        hours=hours,
        billed_gpus=cost.billed_gpus if cost else candidate.num_gpus,
        idle_gpus=idle,
        idle_cost_usd=cost.cost_usd * idle / cost.billed_gpus if cost and idle else None,
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


Option = tuple[Candidate, RunCost]


def _rank(option: Option) -> tuple[bool, float, float, int]:
    """Runnable before unrunnable, then cost, time and fewer GPUs."""
    candidate, cost = option
    return (not candidate.runnable, cost.cost_usd, candidate.hours, candidate.num_gpus)


def _leaves_idle(option: Option, options: list[Option]) -> bool:
    """`option` pays for GPUs of a whole instance it does not use, while the same offer run
    data-parallel over every GPU it bills fits, runs and costs no more."""
    candidate, cost = option
    if cost.billed_gpus <= candidate.num_gpus:
        return False
    return any(
        other.gpu.id == candidate.gpu.id
        and other.num_gpus == cost.billed_gpus
        and other.runnable
        and other_cost.provider == cost.provider
        and other_cost.instance == cost.instance
        and other_cost.pricing == cost.pricing
        and other_cost.region == cost.region
        and other_cost.cost_usd <= cost.cost_usd
        for other, other_cost in options
    )


def options_for(
    ctx: PlanContext,
    catalog: Catalog,
    *,
    gpus: Iterable[GpuSpec],
    provider: str | None,
    pricing: PricingKind | None,
    available: Mapping[str, int | None] | None = None,
    counts: Iterable[int] = GPU_COUNTS,
) -> tuple[list[Option], list[tuple[float, Candidate]]]:
    """Every fitting priced option, best first (none that idles GPUs the same offer could
    use), and per GPU the cheapest-looking configuration that does not fit or is unpriced."""
    fitting: list[Option] = []
    rejected: list[tuple[float, Candidate]] = []
    wanted = tuple(counts)
    for gpu in gpus:
        cap = available.get(gpu.id) if available is not None else None
        best_reject: tuple[float, Candidate] | None = None
        for n in wanted:
            if cap is not None and n > cap:
                break
            candidate = evaluate(ctx, gpu, n)
            priced = costs(candidate, catalog, provider=provider, pricing=pricing)
            if candidate.fits and priced:
                fitting.extend((candidate, c) for c in priced)
                continue
            ranked = priced[0].cost_usd if priced else math.inf
            if best_reject is None or ranked < best_reject[0]:
                best_reject = (ranked, candidate)
        if best_reject is not None:
            rejected.append(best_reject)
    kept = [o for o in fitting if not _leaves_idle(o, fitting)]
    return sorted(kept, key=_rank), sorted(rejected, key=lambda r: r[0])


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
    """Fitting runnable options ranked by cost, fitting options no worker can run, then each
    cheaper non-fitting option with its reason."""
    fitting, rejected = options_for(
        ctx,
        catalog,
        gpus=gpus,
        provider=provider,
        pricing=pricing,
        available=available,
        counts=counts,
    )
    runnable = [o for o in fitting if o[0].runnable]
    unrunnable = [o for o in fitting if not o[0].runnable]
    top = [to_plan(c, cost, pricing=cost.pricing) for c, cost in runnable[:PLAN_LIMIT]]
    # what more devices than a node would buy, while nothing runnable is cheaper
    bar = runnable[0][1].cost_usd if runnable else math.inf
    top += [
        to_plan(c, cost, pricing=cost.pricing)
        for c, cost in unrunnable[:PLAN_LIMIT]
        if cost.cost_usd < bar
    ][: max(PLAN_LIMIT - len(top), 1)]
    bar = fitting[0][1].cost_usd if fitting else math.inf
    cheaper = [c for ranked, c in rejected if ranked < bar or not fitting]
    return top + [
        _rejected_plan(c, provider=provider, pricing=pricing or "on_demand") for c in cheaper
    ]


def _rejected_plan(candidate: Candidate, *, provider: str | None, pricing: str) -> Plan:
    plan = to_plan(candidate, None, pricing=pricing)
    if plan.reason is None:  # it fits but nothing prices it: not an option either
        reason = _no_price(candidate.gpu, provider, pricing)
        plan = plan.model_copy(update={"fits": False, "reason": reason})
    return plan


def _no_price(gpu: GpuSpec, provider: str | None, pricing: str | None) -> str:
    where = f" at {provider}" if provider else ""
    kind = f"{pricing} " if pricing else ""
    return f"no {kind}price for {gpu.id}{where} in the catalog"
