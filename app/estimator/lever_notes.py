"""What a result says about its training settings: each memory lever that is on, and why.

Each reason compares the plan with the same plan without that one lever: the per-GPU memory
that must fit (GiB), whether it would still fit, and the hours the lever adds or saves.
"""

from __future__ import annotations

from app.estimator.levers import without
from app.estimator.planner import Candidate, PlanContext, fits_gpu, memory_of, time_of
from app.estimator.pricing import RunCost
from app.estimator.results import LeverName, LeverOut, TrainingOut
from app.estimator.spec import Method, TrainingSpec

GIB = 1024**3
WHAT = {
    "optimizer_8bit": "bitsandbytes AdamW8bit: both moments in 8 bits, as accurate as 32-bit "
    "Adam (Dettmers et al. 2022)",
    "adapter_bf16": "LoRA's A and B and the inputs peft casts for them in bf16, as the QLoRA "
    "paper trained them (peft's default is fp32)",
    "micro_batch": "the same global batch in smaller micro-batches",
    "gradient_checkpointing": "each block recomputes its forward in backward",
    "paged_optimizer": "optimizer states in unified memory that pages to the host while "
    "activations peak",
}


def _hours(delta_s: float) -> str:
    if abs(delta_s) < 0.5:
        return "no slower"
    sign = "+" if delta_s > 0 else "-"
    return f"{sign}{abs(delta_s) / 3600:.2f} h"


def _why(ctx: PlanContext, candidate: Candidate, lever: LeverName, plain: TrainingSpec) -> str:
    gpu, n = candidate.gpu, candidate.num_gpus
    other = without(candidate.choice, lever, plain)
    mine, factor = memory_of(ctx, gpu, n, candidate.training)
    theirs, _ = memory_of(ctx, gpu, n, other)
    need_without = theirs.must_fit_bytes * factor
    need_with = mine.must_fit_bytes * factor
    fit = "" if fits_gpu(ctx, gpu, n, other) else f", more than the {gpu.memory_gib:.1f} GiB"
    delta = time_of(ctx, gpu, n, candidate.training).total_s - time_of(ctx, gpu, n, other).total_s
    paging = ""
    if lever == "paged_optimizer":
        paged = mine.pageable_bytes * factor
        over = max(mine.per_gpu_bytes * factor - gpu.memory_bytes, 0)
        paging = (
            f" ({paged / GIB:.1f} GiB of optimizer state may leave the GPU; "
            f"{over / GIB:.1f} GiB pages out and back each step)"
        )
    return (
        f"{WHAT[lever]}: {need_with / GIB:.1f} GiB per GPU must fit instead of "
        f"{need_without / GIB:.1f} GiB{fit}{paging}; {_hours(delta)}"
    )


def _setting(lever: LeverName, training: TrainingSpec) -> str:
    if lever in ("optimizer_8bit", "paged_optimizer"):
        return training.optimizer_name
    if lever == "adapter_bf16":
        return "bf16"
    if lever == "micro_batch":
        return f"{training.micro_batch_size} x {training.gradient_accumulation_steps} accumulation"
    return "on"


def _requested(training: TrainingSpec, method: Method) -> list[LeverOut]:
    """Levers the request itself set on."""
    out: list[LeverOut] = []
    if training.gradient_checkpointing:
        out.append(_asked("gradient_checkpointing", "on"))
    optimizer = training.optimizer
    if optimizer is not None and optimizer.endswith("8bit"):
        out.append(_asked("optimizer_8bit", optimizer))
    if optimizer is not None and optimizer.startswith("paged"):
        out.append(_asked("paged_optimizer", optimizer))
    if training.adapter_dtype == "bf16" and method is not Method.FULL:
        out.append(_asked("adapter_bf16", "bf16"))
    return out


def _asked(lever: LeverName, setting: str) -> LeverOut:
    return LeverOut(lever=lever, setting=setting, chosen_by="request", why="as requested")


def training_out(ctx: PlanContext, candidate: Candidate) -> TrainingOut:
    """The settings `candidate` runs with, each lever on with its reason."""
    spec = candidate.training
    plain = ctx.choices(pageable=not candidate.gpu.is_cpu)[0].training
    levers = _requested(ctx.training, ctx.method)
    for name in candidate.choice.levers:
        levers.append(
            LeverOut(
                lever=name,
                setting=_setting(name, spec),
                chosen_by="planner",
                why=_why(ctx, candidate, name, plain),
            )
        )
    return TrainingOut(
        micro_batch_size=spec.micro_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        gradient_checkpointing=spec.checkpointing,
        optimizer=spec.optimizer_name,
        adapter_dtype=None if ctx.method is Method.FULL else (spec.adapter_dtype or "fp32"),
        levers=levers,
    )


def idle_sentence(gpu: str, cost: RunCost, num_gpus: int) -> str:
    """The idle GPUs of a whole-instance offer, and what they cost."""
    idle = cost.billed_gpus - num_gpus
    share = cost.cost_usd * idle / cost.billed_gpus
    return (
        f"{cost.provider} rents {gpu} only as {cost.instance} ({cost.gpus_per_instance} GPUs): "
        f"{idle} of the {cost.billed_gpus} GPUs billed stay idle, ${share:,.2f} of the "
        f"${cost.cost_usd:,.2f}"
    )
