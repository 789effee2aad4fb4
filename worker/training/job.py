"""One training job, start to finish, in the current process: load, tokenize, train, save, meter.

The runner calls this inside its child process; a benchmark may call it directly. It returns the
metered `JobActuals` and raises a `TrainingError` subclass for anything the user
can fix.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import get_settings
from app.jobs.actuals import JobActuals
from worker import metering
from worker.training.cpu_threads import cpu_threads
from worker.training.errors import JobSpecError
from worker.training.loop import ProgressEvent, StopReason
from worker.training.spec import Launch

FALLBACK_MAX_POSITIONS = 2048  # for configs that state no maximum length (rare)


def _pick_device(wanted: str) -> Any:
    import torch

    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise JobSpecError("device 'cuda' was requested but no CUDA device is available")
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _model_max_positions(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    length = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)); ignore it.
    if isinstance(length, int) and 0 < length < 1_000_000_000:
        return length
    return FALLBACK_MAX_POSITIONS


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_training(
    launch: Launch,
    *,
    out_dir: Path,
    on_progress: Callable[[ProgressEvent], None],
    stop_requested: Callable[[], bool],
    on_phase: Callable[[str, dict[str, Any]], None] | None = None,
) -> JobActuals:
    """Train the launched job and save the artifact into `out_dir`; return its actuals.

    `on_phase(name, info)` marks loading_model, preparing_data, training (with the plan),
    evaluating and saving, for status displays.
    """
    phase = on_phase or (lambda name, info: None)
    spec, run = launch.spec, launch.run
    started_at = run.started_at
    device_info = metering.detect_device()
    if spec.num_gpus > 1:
        raise JobSpecError(
            f"num_gpus={spec.num_gpus}: multi-GPU training (FSDP/DDP) is not implemented in "
            "this runner yet; plan the job on one GPU"
        )
    import torch

    from worker.training.data import iterate_batches, one_pass, prepare_data
    from worker.training.loop import evaluate, plan_total_steps, save_artifact, train_loop
    from worker.training.model import load_model
    from worker.training.optim import build_optimizer, warmup_schedule

    _quiet_transformers()
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    device = _pick_device(run.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(get_settings().worker_cpu_threads))
    if device.type == "cuda":
        # CUDA starts lazily, and resetting the peak before its allocator exists raises
        # "Invalid device argument" (seen on an H200, torch 2.11): start it first.
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)
    energy = metering.EnergyMeter()
    energy.start()

    accrued = metering.cost_clock(
        started_at=started_at, num_gpus=spec.num_gpus, price_per_gpu_hour=spec.price_per_gpu_hour
    )

    def should_stop() -> StopReason | None:
        if stop_requested():
            return "cancelled"
        if launch.budget_usd is not None and accrued() >= launch.budget_usd:
            return "budget_exceeded"
        return None

    phase("loading_model", {"device": str(device)})
    loaded = load_model(launch, device=device, bf16_ok=device.type == "cuda" and device_info.bf16)
    training = spec.training
    phase("preparing_data", {"trainable_params": loaded.trainable_params})
    data = prepare_data(
        Path(run.dataset_path),
        loaded.tokenizer,
        seq_len=training.seq_len,
        packing=training.packing,
        mask_prompt=spec.mask_prompt,
        eval_fraction=spec.eval_fraction,
        seed=spec.seed,
        model_max=_model_max_positions(loaded.model, loaded.tokenizer),
        max_bytes=run.max_dataset_bytes,
    )
    optimizer = build_optimizer(
        training.optimizer,
        loaded.model.parameters(),
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        device_type=device.type,
    )
    total_steps = plan_total_steps(
        n_sequences=len(data.train),
        micro_batch_size=training.micro_batch_size,
        grad_accum=training.gradient_accumulation_steps,
        epochs=training.epochs,
        max_steps=spec.max_steps,
    )
    pad_id = int(loaded.tokenizer.pad_token_id)
    batches = iterate_batches(
        data.train,
        micro_batch_size=training.micro_batch_size,
        seq_len=data.seq_len,
        pad_id=pad_id,
        seed=spec.seed,
        padding=training.padding,
        group_by_length=training.group_by_length and not training.packing,
    )
    startup_s = time.time() - started_at
    phase(
        "training",
        {
            "total_steps": total_steps,
            "seq_len": data.seq_len,
            "train_sequences": len(data.train),
            "precision": loaded.precision.used,
        },
    )
    result = train_loop(
        model=loaded.model,
        optimizer=optimizer,
        scheduler=warmup_schedule(optimizer, warmup_steps=spec.warmup_steps),
        batches=batches,
        total_steps=total_steps,
        grad_accum=training.gradient_accumulation_steps,
        device=device,
        precision=loaded.precision,
        max_grad_norm=spec.max_grad_norm,
        on_progress=on_progress,
        should_stop=should_stop,
        accrued_cost=accrued,
        elapsed=lambda: time.time() - started_at,
    )
    if result.stop_reason == "completed":  # a stopped run does not spend more on evaluation
        phase("evaluating", {"eval_sequences": len(data.eval)})
        eval_batches = one_pass(
            data.eval,
            micro_batch_size=training.micro_batch_size,
            seq_len=data.seq_len,
            pad_id=pad_id,
            padding=training.padding,
        )
        result.eval_loss = evaluate(
            loaded.model, eval_batches, device=device, precision=loaded.precision
        )
    artifact_bytes = None
    if result.steps > 0:
        phase("saving", {"steps": result.steps})
        artifact_bytes = save_artifact(loaded.model, loaded.tokenizer, out_dir)

    energy_kwh = energy.stop()
    peak, peak_kind, reserved = metering.peak_memory(device.type)
    wall_s = time.time() - started_at
    kind = device_info.kind if device.type == "cuda" else metering.CPU_KIND
    peak_flops = run.peak_flops_per_gpu or metering.catalog_peak_flops(
        kind, loaded.precision.compute_dtype
    )
    tflops, mfu = metering.achieved_flops(
        flops_per_token=spec.flops_per_token,
        tokens_processed=result.tokens_processed,
        train_s=result.train_s,
        peak_flops_per_gpu=peak_flops,
        num_gpus=spec.num_gpus,
    )
    return JobActuals(
        device_kind=kind,
        device_name=device_info.name if device.type == "cuda" else metering.cpu_name(),
        num_gpus=spec.num_gpus,
        wall_s=wall_s,
        startup_s=startup_s,
        train_s=result.train_s,
        warmup_s=result.warmup_s,
        gpu_hours=wall_s / metering.HOUR_S * spec.num_gpus,
        peak_memory_bytes=peak,
        peak_memory_kind=peak_kind,
        peak_memory_reserved_bytes=reserved,
        steps=result.steps,
        tokens=result.tokens,
        tokens_processed=result.tokens_processed,
        loss_tokens=result.loss_tokens,
        tokens_per_s=result.tokens / result.train_s if result.train_s > 0 else 0.0,
        processed_tokens_per_s=(
            result.tokens_processed / result.train_s if result.train_s > 0 else 0.0
        ),
        achieved_tflops=tflops,
        mfu=mfu,
        peak_tflops_per_gpu=peak_flops / 1e12 if peak_flops else None,
        energy_kwh=energy_kwh,
        price_per_gpu_hour=spec.price_per_gpu_hour,
        cost_usd=metering.accrued_cost_usd(
            elapsed_s=wall_s, num_gpus=spec.num_gpus, price_per_gpu_hour=spec.price_per_gpu_hour
        ),
        final_loss=result.final_loss,
        eval_loss=result.eval_loss,
        precision=loaded.precision.used,
        library_versions=metering.library_versions(),
        stop_reason=result.stop_reason,
        total_steps=result.total_steps,
        trainable_params=loaded.trainable_params,
        total_params=loaded.total_params,
        precision_requested=loaded.precision.requested,
        learning_rate=spec.lr,
        data=vars(data.stats),
        artifact_path=str(out_dir) if artifact_bytes is not None else None,
        artifact_bytes=artifact_bytes,
    )
