"""The estimator engine: one call from a model analysis and a run spec to the full answer.

`estimate` glues the pure parts together: tokens (workload), memory per GPU (memory), FLOPs and
time (compute), money and artifacts (pricing), the cheapest plans (planner) and the verdict
(recommend). Results are cached by their inputs and the catalog's prices, so asking again costs
a dictionary lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from app.estimator.assemble import dataset_summary, method_result, model_summary
from app.estimator.calibration_types import CalibrationTable
from app.estimator.catalog_types import Catalog, GpuSpec
from app.estimator.errors import EstimateInputError
from app.estimator.evidence import Evidence
from app.estimator.fleet import ANY, Fleet
from app.estimator.lora import lora_trainable_params
from app.estimator.memory import estimate_memory
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.model_notes import lora_targets_out, model_notes
from app.estimator.planner import (
    GPU_COUNTS,
    Candidate,
    MemoryFn,
    MemoryLike,
    PlanContext,
    costs,
    options_for,
    plan_method,
)
from app.estimator.pricing import (
    RunCost,
    artifact_size,
    base_model_bytes,
    storage_usd,
    stored_bytes,
    variant_storage,
)
from app.estimator.recommend import DomainShift, recommend
from app.estimator.results import (
    EstimateResult,
    MethodResult,
    Plan,
)
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
)
from app.estimator.speed import DeviceSpeed
from app.estimator.workload import build_workload

CACHE_SIZE = 512  # distinct requests kept; an entry is a few KB
_CACHE: OrderedDict[tuple[Any, ...], EstimateResult] = OrderedDict()

AvailableGpus = Mapping[str, int] | Collection[str]


def estimate(
    *,
    analysis: ModelAnalysis,
    dataset: DatasetShape,
    methods: Sequence[Method | str],
    training: TrainingSpec,
    lora: LoraSpec,
    qlora: QLoraSpec,
    hardware: HardwareSpec,
    catalog: Catalog,
    calibration: CalibrationTable | None = None,
    speeds: Mapping[str, DeviceSpeed] | None = None,
    variants: int = 1,
    storage_months: float = 12,
    budget_usd: float | None = None,
    domain_shift: DomainShift | None = None,
    lora_tried_and_insufficient: bool = False,
    available_gpus: AvailableGpus | None = None,
    fleet: Fleet = ANY,
    evidence: Evidence | None = None,
) -> EstimateResult:
    """Memory, time, cost, plans and a recommendation for each method (cached by inputs).

    `available_gpus` limits the plans to GPUs the caller can get: ids, or ids with a count.
    `fleet` says what the workers can run; a plan beyond it is shown, never recommended.
    `speeds` are devices' speeds as workers measured them, by GPU id: used in place of the
    catalog's datasheet figures, with calibration's efficiency and floor factor on top.
    Unknown GPU ids raise `UnknownGpuError`; unknown providers `UnknownProviderError`.
    """
    wanted = tuple(dict.fromkeys(Method(m) for m in methods))
    if not wanted:
        raise EstimateInputError(
            "methods must name at least one of full, lora, qlora", field="methods"
        )
    if variants < 1:
        raise EstimateInputError("variants must be at least 1", field="variants")
    if storage_months < 0:
        raise EstimateInputError("storage_months must not be negative", field="storage_months")
    if budget_usd is not None and budget_usd <= 0:
        raise EstimateInputError("budget_usd must be positive", field="budget_usd")
    gpu_id = catalog.resolve_gpu_id(hardware.gpu) if hardware.gpu is not None else None
    if hardware.provider is not None:
        catalog.check_provider(hardware.provider)
    available = _available(catalog, available_gpus)

    key = (
        analysis.config_hash,
        dataset.model_dump_json(),
        wanted,
        training.model_dump_json(),
        lora.model_dump_json(),
        qlora.model_dump_json(),
        hardware.model_dump_json(),
        catalog.version,
        hash(catalog.prices),
        tuple(sorted((k[0], str(k[1]), v) for k, v in (calibration or {}).items())),
        tuple(sorted((speeds or {}).items())),
        variants,
        storage_months,
        budget_usd,
        domain_shift,
        lora_tried_and_insufficient,
        tuple(sorted(available.items())) if available is not None else None,
        fleet,
        evidence.key() if evidence is not None else None,
    )
    cached = _CACHE.get(key)
    if cached is not None:
        _CACHE.move_to_end(key)
        return cached

    result = _estimate(
        analysis=analysis,
        dataset=dataset,
        methods=wanted,
        training=training,
        lora=lora,
        qlora=qlora,
        hardware=hardware,
        gpu_id=gpu_id,
        catalog=catalog,
        calibration=calibration,
        speeds=speeds,
        variants=variants,
        storage_months=storage_months,
        budget_usd=budget_usd,
        domain_shift=domain_shift,
        lora_tried_and_insufficient=lora_tried_and_insufficient,
        available=available,
        fleet=fleet,
        evidence=evidence,
    )
    _CACHE[key] = result
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _available(catalog: Catalog, given: AvailableGpus | None) -> dict[str, int | None] | None:
    if given is None:
        return None
    if isinstance(given, Mapping):
        if any(int(n) < 1 for n in given.values()):
            raise EstimateInputError(
                "available_gpus counts must be at least 1", field="available_gpus"
            )
        return {catalog.resolve_gpu_id(g): int(n) for g, n in given.items()}
    return {catalog.resolve_gpu_id(g): None for g in given}


def _memory_fn(
    analysis: ModelAnalysis,
    method: Method,
    lora: LoraSpec,
    qlora: QLoraSpec,
    seq_len: int,
) -> MemoryFn:
    def memory(training: TrainingSpec, num_gpus: int, gpu_memory_bytes: int | None) -> MemoryLike:
        return estimate_memory(
            analysis=analysis,
            method=method,
            training=training,
            lora=lora,
            qlora=qlora,
            seq_len=seq_len,
            num_gpus=num_gpus,
            sharding=training.sharding,
            gpu_memory_bytes=gpu_memory_bytes,
        )

    return memory


def _estimate(
    *,
    analysis: ModelAnalysis,
    dataset: DatasetShape,
    methods: tuple[Method, ...],
    training: TrainingSpec,
    lora: LoraSpec,
    qlora: QLoraSpec,
    hardware: HardwareSpec,
    gpu_id: str | None,
    catalog: Catalog,
    calibration: CalibrationTable | None,
    speeds: Mapping[str, DeviceSpeed] | None,
    variants: int,
    storage_months: float,
    budget_usd: float | None,
    domain_shift: DomainShift | None,
    lora_tried_and_insufficient: bool,
    available: dict[str, int | None] | None,
    fleet: Fleet,
    evidence: Evidence | None,
) -> EstimateResult:
    workload = build_workload(
        dataset=dataset,
        training=training,
        max_position_embeddings=analysis.max_position_embeddings or None,
    )
    peft_methods = [m for m in methods if m is not Method.FULL]
    trainable = lora_trainable_params(analysis, lora) if peft_methods else 0
    full_art = artifact_size(
        analysis=analysis, method=Method.FULL, training=training, lora=lora, lora_trainable=0
    )
    adapter_art = (
        artifact_size(
            analysis=analysis,
            method=Method.LORA,
            training=training,
            lora=lora,
            lora_trainable=trainable,
        )
        if peft_methods
        else None
    )
    plan_gpus = _plan_gpus(catalog, gpu_id, available)
    if not plan_gpus and gpu_id is None:
        raise EstimateInputError(
            "available_gpus leaves no catalog GPU to plan on", field="available_gpus"
        )
    counts = (hardware.num_gpus,) if hardware.num_gpus is not None else GPU_COUNTS

    results: dict[Method, MethodResult] = {}
    plans: dict[Method, list[Plan]] = {}
    # one storage price for every method, so a smaller artifact never costs more to store
    store = catalog.storage_price(hardware.provider)
    for method in methods:
        art = full_art if method is Method.FULL or adapter_art is None else adapter_art
        ctx = PlanContext(
            analysis=analysis,
            method=method,
            training=training,
            qlora=qlora,
            workload=workload,
            lora_trainable=trainable if method is not Method.FULL else 0,
            artifact_bytes=art.bytes,
            memory=_memory_fn(analysis, method, lora, qlora, workload.peak_len),
            lora=lora if method is not Method.FULL else None,
            calibration=calibration,
            fleet=fleet,
            dataset=dataset,
            max_positions=analysis.max_position_embeddings or None,
            speeds=speeds or {},
        )
        plans[method] = plan_method(
            ctx,
            catalog,
            gpus=plan_gpus,
            provider=hardware.provider,
            pricing=hardware.pricing,
            available=available,
            counts=counts,
        )
        candidate, cost = _choose(ctx, catalog, hardware, gpu_id, plan_gpus, available, counts)
        if method is not Method.FULL and candidate.training.adapter_dtype != "fp32":
            art = artifact_size(
                analysis=analysis,
                method=method,
                training=candidate.training,
                lora=lora,
                lora_trainable=trainable,
            )
        stored = stored_bytes(artifact_bytes=art.bytes, variants=variants)
        results[method] = method_result(
            ctx,
            candidate,
            cost,
            workload=ctx.workload_for(candidate.training),
            artifact_bytes=art.bytes,
            storage_cost=storage_usd(stored_bytes=stored, months=storage_months, price=store),
        )

    if budget_usd is not None:
        results = {
            m: r.model_copy(
                update={"over_budget": r.cost_usd is not None and r.cost_usd > budget_usd}
            )
            for m, r in results.items()
        }
    storage = None
    if adapter_art is not None:
        adapter_bytes = min(r.artifact_bytes for m, r in results.items() if m is not Method.FULL)
        storage = variant_storage(
            full_artifact_bytes=full_art.bytes,
            adapter_artifact_bytes=adapter_bytes,
            variants=variants,
            months=storage_months,
            price=store,
        )
    recommendation = recommend(
        results=results,
        plans=plans,
        storage=storage,
        budget_usd=budget_usd,
        domain_shift=domain_shift,
        lora_tried_and_insufficient=lora_tried_and_insufficient,
        base_bytes=base_model_bytes(analysis),
        evidence=evidence,
    )
    return EstimateResult(
        catalog_version=catalog.version,
        model=model_summary(analysis),
        dataset=dataset_summary(workload),
        results=results,
        plans=plans,
        recommendation=recommendation,
        lora=lora_targets_out(analysis, lora) if peft_methods else None,
        notes=[*workload.notes, *model_notes(analysis=analysis, methods=methods, lora=lora)],
    )


def _plan_gpus(
    catalog: Catalog, gpu_id: str | None, available: dict[str, int | None] | None
) -> list[GpuSpec]:
    """GPUs the plans consider: the catalog's (CPU only when asked for), limited to available."""
    gpus = [g for g in catalog.gpus.values() if not g.is_cpu or g.id == gpu_id]
    if available is not None:
        gpus = [g for g in gpus if g.id in available]
    return gpus


def _choose(
    ctx: PlanContext,
    catalog: Catalog,
    hardware: HardwareSpec,
    gpu_id: str | None,
    plan_gpus: list[GpuSpec],
    available: dict[str, int | None] | None,
    counts: Sequence[int],
) -> tuple[Candidate, RunCost | None]:
    """The configuration a method's result reports, and its price: the best fitting option
    (runnable first), else the runnable configuration closest to fitting, unpriced."""
    pool = [catalog.gpus[gpu_id]] if gpu_id is not None else plan_gpus
    fitting, _ = options_for(
        ctx,
        catalog,
        gpus=pool,
        provider=hardware.provider,
        pricing=hardware.pricing,
        available=available,
        counts=counts,
    )
    if fitting:
        return fitting[0]
    ids = {g.id for g in pool}
    seen = [c for c in ctx._candidates.values() if c.gpu.id in ids]
    if not seen:
        raise EstimateInputError(
            f"available_gpus offers no GPU in the counts asked for: {counts}",
            field="available_gpus",
        )
    # closest to fitting among what a worker could run and the GPU can compute
    usable = [c for c in seen if c.time is not None and c.runnable]
    usable = usable or [c for c in seen if c.time is not None] or seen
    candidate = min(
        usable,
        key=lambda c: (c.memory.must_fit_bytes * c.memory_factor / c.gpu.memory_bytes, c.num_gpus),
    )
    if not candidate.fits:
        return candidate, None
    priced = costs(candidate, catalog, provider=hardware.provider, pricing=hardware.pricing)
    return candidate, (priced[0] if priced else None)


def clear_cache() -> None:
    """Forget cached estimates (tests; a process that reloads its catalog)."""
    _CACHE.clear()
