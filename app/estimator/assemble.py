"""Turning what the planner evaluated into the estimator's answer models (results.py)."""

from __future__ import annotations

from app.estimator.compute import TimeBreakdown, flops_per_token
from app.estimator.lever_notes import idle_sentence, training_out
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.planner import Candidate, MemoryLike, PlanContext
from app.estimator.pricing import RunCost
from app.estimator.results import (
    DatasetSummary,
    FlopsOut,
    MemoryBreakdownOut,
    MemoryOut,
    MethodResult,
    ModelSummary,
    TimeOut,
    range_of,
)
from app.estimator.workload import Workload

GIB = 1024**3


def model_summary(analysis: ModelAnalysis) -> ModelSummary:
    """The model part of the answer."""
    return ModelSummary(
        architecture=analysis.architecture,
        model_type=analysis.model_type,
        total_params=analysis.total_params,
        active_params=analysis.active_params,
        num_layers=analysis.num_layers,
        hidden_size=analysis.hidden_size,
        vocab_size=analysis.vocab_size,
        is_encoder_decoder=analysis.is_encoder_decoder,
    )


def memory_out(memory: MemoryLike, factor: float) -> MemoryOut:
    """A memory estimate scaled by a calibrated factor, as the answer reports it."""
    parts = memory.breakdown.as_dict()
    fields = MemoryBreakdownOut.model_fields
    return MemoryOut(
        per_gpu_bytes=int(memory.per_gpu_bytes * factor),
        allocated_bytes=int(memory.allocated_bytes * factor),
        reserved_bytes=int(memory.reserved_bytes * factor),
        low_bytes=int(memory.low_bytes * factor),
        high_bytes=int(memory.high_bytes * factor),
        breakdown=MemoryBreakdownOut(
            **{k: int(v * factor) for k, v in parts.items() if k in fields}
        ),
        pageable_bytes=int(memory.pageable_bytes * factor),
    )


def method_result(
    ctx: PlanContext,
    candidate: Candidate,
    cost: RunCost | None,
    *,
    workload: Workload,
    artifact_bytes: int,
    storage_cost: float,
) -> MethodResult:
    """The answer for one method: the chosen candidate with its price, artifact and notes."""
    notes = list(workload.notes)
    if candidate.reason:
        notes.append(candidate.reason)
    if candidate.unrunnable:
        notes.append(f"no worker can run it: {candidate.unrunnable}")
    memory = memory_out(candidate.memory, candidate.memory_factor)
    tight = candidate.tight
    if tight:
        notes.append(
            f"tight: the high estimate ({(memory.high_bytes - memory.pageable_bytes) / GIB:.1f} "
            f"GiB) exceeds {candidate.gpu.id}'s {candidate.gpu.memory_gib:.1f} GiB"
        )
    idle = 0
    if cost is None and candidate.fits:
        notes.append(f"no price for {candidate.gpu.id} matches the provider and pricing asked for")
    elif cost is not None and cost.billed_gpus > candidate.num_gpus:
        idle = cost.billed_gpus - candidate.num_gpus
        notes.append(idle_sentence(candidate.gpu.id, cost, candidate.num_gpus))
    per_token = flops_per_token(
        analysis=ctx.analysis,
        method=ctx.method,
        training=ctx.training,
        lora_trainable=ctx.lora_trainable,
        seq_len=workload.padded_len,
        lora=ctx.lora,
    )
    time = candidate.time
    gpu_hours = cost.gpu_hours if cost else candidate.num_gpus * (time.hours if time else 0)
    return MethodResult(
        method=ctx.method,
        trainable_params=ctx.lora_trainable or ctx.analysis.total_params,
        memory=memory,
        gpu=candidate.gpu.id,
        gpu_memory_bytes=candidate.gpu.memory_bytes,
        num_gpus=candidate.num_gpus,
        nodes=candidate.nodes,
        strategy=candidate.memory.strategy,
        training=training_out(ctx, candidate),
        fits=candidate.fits,
        runnable=candidate.runnable,
        tight=tight,
        flops=time.flops if time else workload.processed_tokens * per_token.total,
        flops_detail=FlopsOut(
            per_token=per_token.as_dict(), total=workload.processed_tokens * per_token.total
        ),
        hours=candidate.hours if time else 0.0,
        time=TimeOut(**_time_parts(time)),
        steps=time.optimizer_steps if time else workload.optimizer_steps(candidate.num_gpus),
        billed_gpus=cost.billed_gpus if cost else candidate.num_gpus,
        idle_gpus=idle,
        idle_cost_usd=cost.cost_usd * idle / cost.billed_gpus if cost and idle else None,
        gpu_hours=gpu_hours,
        provider=cost.provider if cost else None,
        pricing=cost.pricing if cost else "on_demand",
        price_per_gpu_hour=cost.price_per_gpu_hour if cost else None,
        cost_usd=cost.cost_usd if cost else None,
        hours_range=range_of(candidate.hours, candidate.basis) if time else None,
        gpu_hours_range=range_of(gpu_hours, candidate.basis) if time else None,
        cost_usd_range=range_of(cost.cost_usd if cost else None, candidate.basis),
        region=cost.region or None if cost else None,
        instance=cost.instance or None if cost else None,
        price_as_of=cost.price_as_of if cost else None,
        price_source=cost.price_source if cost else None,
        mfu=candidate.mfu,
        basis=candidate.basis,
        calibration_jobs=candidate.calibration_jobs,
        memory_factor=candidate.memory_factor,
        artifact_bytes=artifact_bytes,
        storage_cost_usd=storage_cost,
        notes=notes,
    )


def _time_parts(time: TimeBreakdown | None) -> dict[str, float | int]:
    names = (
        "compute_s",
        "weight_stream_s",
        "dequant_s",
        "optimizer_s",
        "comm_s",
        "overhead_s",
        "adapter_s",
        "elementwise_s",
        "host_s",
        "overlap_s",
        "paging_s",
    )
    if time is None:
        return dict.fromkeys((*names, "total_s"), 0.0)
    parts = {**{n: getattr(time, n) for n in names}, "total_s": time.total_s}
    return {
        **parts,
        "micro_steps": time.micro_steps,
        "mfu_peak": time.mfu_peak,
        "host_scale": time.host_scale,
        "overlap_power": time.overlap_power,
    }


def dataset_summary(workload: Workload) -> DatasetSummary:
    """The dataset part of the answer."""
    return DatasetSummary(
        num_sequences=workload.num_examples,
        tokens_per_epoch=workload.tokens_per_epoch,
        epochs=workload.epochs,
        processed_tokens=workload.processed_tokens,
        seq_len=workload.peak_len,
        mean_padded_len=workload.padded_len,
        packing=workload.packed,
        micro_batches=workload.micro_batches,
        steps=workload.optimizer_steps(1),
    )
