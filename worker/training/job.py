"""One training job, start to finish, in the current process: set up, train, save, meter.

It reads like a torchtune recipe: `TrainingRecipe.setup` builds the device, model, data and
optimizer; `train` runs the loop (and the evaluation of a run that completed); `save` writes the
artifact; `meter` turns what was spent into `JobActuals`. The runner calls `run_training` inside
its child process; a benchmark may call it directly. Anything the user can fix raises a
`TrainingError` subclass. On several devices every rank runs the same recipe with its `Ranks`
(worker/training/distributed.py): the model is wrapped by the job's strategy, each rank trains
its shard of the micro-batches, and rank 0 alone saves and meters the whole job.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.config import get_settings
from app.evals.stats import mean_loss
from app.jobs.actuals import JobActuals
from app.jobs.spec import JobSpec
from worker.training import metering
from worker.training.cpu_threads import cpu_threads
from worker.training.data import Batch, PreparedData, iterate_batches, one_pass, prepare_data
from worker.training.distributed import SOLO, Ranks, full_state_dict, unwrap, wrap_model
from worker.training.errors import JobSpecError
from worker.training.evaluation import EvalCallback, EvalCurve
from worker.training.loop import (
    LoopResult,
    StopReason,
    plan_total_steps,
    save_artifact,
    train_loop,
)
from worker.training.messages import PhaseInfo, ProgressEvent
from worker.training.model import LoadedModel, load_model
from worker.training.optim import build_optimizer, warmup_schedule
from worker.training.spec import Launch

FALLBACK_MAX_POSITIONS = 2048  # for configs that state no maximum length (rare)
PhaseCallback = Callable[[str, PhaseInfo], None]


def _pick_device(wanted: str) -> torch.device:
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


def _check_ranks(spec: JobSpec, ranks: Ranks) -> None:
    if spec.num_gpus != ranks.world_size:
        raise JobSpecError(
            f"num_gpus={spec.num_gpus} but this process is one of {ranks.world_size} ranks: a "
            "job on several devices runs one rank per device (worker.training.runner.run_job)"
        )


@dataclass
class Setup:
    """What `TrainingRecipe.setup` built: everything the loop needs, and when start-up ended."""

    device: torch.device
    device_info: metering.DeviceInfo
    loaded: LoadedModel
    model: Any  # loaded.model, wrapped for the job's ranks (DDP or FSDP) when there are several
    data: PreparedData
    optimizer: torch.optim.Optimizer
    total_steps: int
    pad_id: int
    batches: Iterator[Batch]
    energy: metering.EnergyMeter
    startup_s: float


class TrainingRecipe:
    """One job in this process: setup, train, save, meter, called in that order."""

    def __init__(
        self,
        launch: Launch,
        *,
        out_dir: Path,
        on_phase: PhaseCallback | None = None,
        ranks: Ranks = SOLO,
    ) -> None:
        self.launch = launch
        self.ranks = ranks
        self.spec, self.run = launch.spec, launch.run
        self.out_dir = out_dir
        self.phase: PhaseCallback = on_phase or (lambda name, info: None)
        self.accrued = metering.cost_clock(
            started_at=self.run.started_at,
            num_gpus=self.spec.num_gpus,
            price_per_gpu_hour=self.spec.price_per_gpu_hour,
        )
        self.curve: EvalCurve | None = None

    def elapsed(self) -> float:
        """Seconds since the attempt started (its billing start)."""
        return time.time() - self.run.started_at

    def setup(self) -> Setup:
        """Device, seeds and energy meter, then the model, the data and the optimizer."""
        device_info = metering.detect_device()
        _check_ranks(self.spec, self.ranks)
        _quiet_transformers()
        random.seed(self.spec.seed)
        torch.manual_seed(self.spec.seed)
        device = self._setup_device()
        # NVML sees the job's devices only (CUDA_VISIBLE_DEVICES): rank 0's reading is the job's.
        energy = metering.EnergyMeter()
        energy.start()
        loaded = self._setup_model(device, device_info)
        data = self._setup_data(loaded)
        model = wrap_model(loaded.model, self.ranks, grad_scaler=loaded.precision.grad_scaler)
        optimizer = self._setup_optimizer(model, device)
        training = self.spec.training
        total_steps = plan_total_steps(
            n_sequences=len(data.train),
            micro_batch_size=training.micro_batch_size,
            # one step is one global batch, over every rank
            grad_accum=training.gradient_accumulation_steps * self.ranks.world_size,
            epochs=training.epochs,
            max_steps=self.spec.max_steps,
        )
        pad_id = int(loaded.tokenizer.pad_token_id)
        batches = iterate_batches(
            data.train,
            micro_batch_size=training.micro_batch_size,
            seq_len=data.seq_len,
            pad_id=pad_id,
            seed=self.spec.seed,
            padding=training.padding,
            group_by_length=training.group_by_length and not training.packing,
        )
        return Setup(
            device=device,
            device_info=device_info,
            loaded=loaded,
            model=model,
            data=data,
            optimizer=optimizer,
            total_steps=total_steps,
            pad_id=pad_id,
            batches=self.ranks.shard(batches),
            energy=energy,
            startup_s=self.elapsed(),
        )

    def _setup_device(self) -> torch.device:
        ranks = self.ranks
        device = ranks.device if ranks.distributed else _pick_device(self.run.device)
        if device.type == "cpu":
            # The ranks of one job on this node share the cores the node's share of it may use.
            local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size))
            threads = cpu_threads(get_settings().worker_cpu_threads) // local_ranks
            torch.set_num_threads(max(1, threads))
        if device.type == "cuda":
            # CUDA starts lazily, and resetting the peak before its allocator exists raises
            # "Invalid device argument" (seen on an H200, torch 2.11): start it first.
            torch.cuda.init()
            torch.cuda.reset_peak_memory_stats(device)
        return device

    def _setup_model(self, device: torch.device, device_info: metering.DeviceInfo) -> LoadedModel:
        self.phase("loading_model", {"device": str(device)})
        bf16_ok = device.type == "cuda" and device_info.bf16
        return load_model(self.launch, device=device, bf16_ok=bf16_ok)

    def _setup_data(self, loaded: LoadedModel) -> PreparedData:
        self.phase("preparing_data", {"trainable_params": loaded.trainable_params})
        training = self.spec.training
        return prepare_data(
            Path(self.run.dataset_path),
            loaded.tokenizer,
            seq_len=training.seq_len,
            packing=training.packing,
            mask_prompt=self.spec.mask_prompt,
            eval_fraction=self.spec.eval_fraction,
            data_fraction=self.spec.data_fraction,
            model_max=_model_max_positions(loaded.model, loaded.tokenizer),
            max_bytes=self.run.max_dataset_bytes,
            columns=self.run.dataset_columns,
        )

    def _setup_optimizer(self, model: Any, device: torch.device) -> torch.optim.Optimizer:
        # After wrapping: FSDP replaces the parameters by their shards.
        return build_optimizer(
            self.spec.training.optimizer_name,
            model.parameters(),
            lr=self.spec.lr,
            weight_decay=self.spec.weight_decay,
            device_type=device.type,
        )

    def train(
        self,
        setup: Setup,
        *,
        on_progress: Callable[[ProgressEvent], None],
        stop_requested: Callable[[], bool],
        on_eval: EvalCallback | None = None,
    ) -> LoopResult:
        """The training loop until done, cancelled or over budget; the held-out set is scored
        before the first step, at intervals, and at the end of a completed run."""
        budget = self.launch.budget_usd

        def should_stop() -> StopReason | None:
            if stop_requested():
                return "cancelled"
            if budget is not None and self.accrued() >= budget:
                return "budget_exceeded"
            return None

        loaded, data, training = setup.loaded, setup.data, self.spec.training
        self.phase(
            "training",
            {
                "total_steps": setup.total_steps,
                "seq_len": data.seq_len,
                "train_sequences": len(data.train),
                "precision": loaded.precision.used,
            },
        )
        curve = self.curve = self._curve(setup, on_eval, should_stop)
        if curve is not None:
            curve.base()
        result = train_loop(
            model=setup.model,
            optimizer=setup.optimizer,
            scheduler=warmup_schedule(
                setup.optimizer,
                warmup_steps=self.spec.warmup_steps,
                schedule=self.spec.lr_schedule,
                total_steps=setup.total_steps,
            ),
            batches=setup.batches,
            total_steps=setup.total_steps,
            grad_accum=training.gradient_accumulation_steps,
            device=setup.device,
            precision=loaded.precision,
            max_grad_norm=self.spec.max_grad_norm,
            on_progress=on_progress,
            should_stop=should_stop,
            accrued_cost=self.accrued,
            elapsed=self.elapsed,
            ranks=self.ranks,
            after_step=curve.after_step if curve is not None else None,
        )
        # A stopped run does not spend more on evaluation.
        if result.stop_reason == "completed" and curve is not None:
            self.phase("evaluating", {"eval_sequences": len(setup.data.eval)})
            result.eval_loss = curve.finish(result.steps, result.tokens)
            if curve.stopped is not None:  # every step trained; a cancel or the budget
                result.stop_reason = curve.stopped  # ended the last evaluation
        return result

    def _curve(
        self,
        setup: Setup,
        on_eval: EvalCallback | None,
        should_stop: Callable[[], StopReason | None],
    ) -> EvalCurve | None:
        """The run's evaluations (None without a held-out set)."""
        data, training = setup.data, self.spec.training
        if not data.eval or data.stats.eval_set_id is None:
            return None
        batches = one_pass(
            data.eval,
            micro_batch_size=training.micro_batch_size,
            seq_len=data.seq_len,
            pad_id=setup.pad_id,
            padding=training.padding,
        )
        # Every rank evaluates every held-out batch (FSDP's forward is a collective); only the
        # rank that reports sends the points.
        return EvalCurve(
            model=setup.model,
            batches=batches,
            device=setup.device,
            precision=setup.loaded.precision,
            eval_set_id=data.stats.eval_set_id,
            total_steps=setup.total_steps,
            points=self.spec.eval_points,
            accrued_cost=self.accrued,
            elapsed=self.elapsed,
            on_eval=on_eval if self.ranks.is_main else None,
            should_stop=should_stop,
            ranks=self.ranks,
        )

    def save(self, setup: Setup, result: LoopResult) -> int | None:
        """Write the adapter or checkpoint into `out_dir`; its bytes (None if no step ran, and
        on every rank but 0)."""
        if result.steps == 0:
            return None
        self.phase("saving", {"steps": result.steps})
        state = full_state_dict(setup.model, self.ranks)  # a collective on every rank
        if not self.ranks.is_main:
            return None
        model = unwrap(setup.model)
        return save_artifact(model, setup.loaded.tokenizer, self.out_dir, state_dict=state)

    def meter(
        self, setup: Setup, result: LoopResult, artifact_bytes: int | None
    ) -> JobActuals | None:
        """Stop the meters and return what the run spent and did (None on ranks other than 0:
        rank 0 gathers every rank's peak memory and reports for the job)."""
        spec, loaded, device = self.spec, setup.loaded, setup.device
        # Each node's local rank 0 reads its node's devices; the job's energy is their sum.
        node_energy = setup.energy.stop() if self.ranks.local_rank == 0 else None
        energies = [e for e in self.ranks.gather(node_energy) if e is not None]  # a collective
        energy_kwh = sum(energies) if energies else None
        peaks = self.ranks.gather(metering.peak_memory(device.type))  # a collective
        if not self.ranks.is_main:
            return None
        peak_kind = peaks[0].kind
        peak = max(p.bytes for p in peaks)
        reserved_all = [p.reserved_bytes for p in peaks if p.reserved_bytes is not None]
        reserved = max(reserved_all) if reserved_all else None
        device_all = [p.device_bytes for p in peaks if p.device_bytes is not None]
        wall_s = self.elapsed()
        kind = setup.device_info.kind if device.type == "cuda" else metering.CPU_KIND
        peak_flops = self.run.peak_flops_per_gpu or metering.catalog_peak_flops(
            kind, loaded.precision.compute_dtype
        )
        tflops, mfu = metering.achieved_flops(
            flops_per_token=spec.flops_per_token,
            tokens_processed=result.tokens_processed,
            train_s=result.train_s,
            peak_flops_per_gpu=peak_flops,
            num_gpus=spec.num_gpus,
        )
        train_s = result.train_s
        curve = self.curve
        final = curve.final if curve is not None else None
        final_stats = mean_loss(final.loss_sums, final.tokens) if final is not None else None
        return JobActuals(
            device_kind=kind,
            device_name=setup.device_info.name if device.type == "cuda" else metering.cpu_name(),
            num_gpus=spec.num_gpus,
            nodes=spec.nodes,
            wall_s=wall_s,
            startup_s=setup.startup_s,
            train_s=train_s,
            warmup_s=result.warmup_s,
            gpu_hours=wall_s / metering.HOUR_S * spec.num_gpus,
            peak_memory_bytes=peak,
            peak_memory_kind=peak_kind,
            peak_memory_reserved_bytes=reserved,
            peak_memory_device_bytes=max(device_all) if device_all else None,
            steps=result.steps,
            tokens=result.tokens,
            tokens_processed=result.tokens_processed,
            loss_tokens=result.loss_tokens,
            tokens_per_s=result.tokens / train_s if train_s > 0 else 0.0,
            processed_tokens_per_s=result.tokens_processed / train_s if train_s > 0 else 0.0,
            achieved_tflops=tflops,
            mfu=mfu,
            peak_tflops_per_gpu=peak_flops / 1e12 if peak_flops else None,
            energy_kwh=energy_kwh,
            price_per_gpu_hour=spec.price_per_gpu_hour,
            cost_usd=metering.accrued_cost_usd(
                elapsed_s=wall_s,
                num_gpus=spec.num_gpus,
                price_per_gpu_hour=spec.price_per_gpu_hour,
            ),
            final_loss=result.final_loss,
            eval_loss=result.eval_loss,
            eval_loss_se=final_stats.se if final_stats and final_stats.items > 1 else None,
            eval_token_accuracy=final.token_accuracy if final is not None else None,
            eval_items=final_stats.items if final_stats is not None else None,
            eval_set_id=setup.data.stats.eval_set_id if final is not None else None,
            eval_s=curve.seconds if curve is not None else None,
            precision=loaded.precision.used,
            library_versions=metering.library_versions(),
            stop_reason=result.stop_reason,
            total_steps=result.total_steps,
            trainable_params=loaded.trainable_params,
            total_params=loaded.total_params,
            precision_requested=loaded.precision.requested,
            learning_rate=spec.lr,
            data=vars(setup.data.stats),
            artifact_path=str(self.out_dir) if artifact_bytes is not None else None,
            artifact_bytes=artifact_bytes,
            world_size=self.ranks.world_size,
            strategy=self.ranks.strategy,
            peak_memory_per_rank_bytes=[p.bytes for p in peaks],
        )


def run_training(
    launch: Launch,
    *,
    out_dir: Path,
    on_progress: Callable[[ProgressEvent], None],
    stop_requested: Callable[[], bool],
    on_phase: PhaseCallback | None = None,
    on_eval: EvalCallback | None = None,
) -> JobActuals:
    """Train the launched job on one device and save the artifact into `out_dir`; its actuals.

    `on_phase(name, info)` marks loading_model, preparing_data, training (with the plan),
    evaluating and saving, for status displays; `on_eval` receives each point of the eval curve.
    """
    actuals = train_rank(
        launch,
        ranks=SOLO,
        out_dir=out_dir,
        on_progress=on_progress,
        stop_requested=stop_requested,
        on_phase=on_phase,
        on_eval=on_eval,
    )
    assert actuals is not None, "the only rank is rank 0, which meters"
    return actuals


def train_rank(
    launch: Launch,
    *,
    ranks: Ranks,
    out_dir: Path,
    on_progress: Callable[[ProgressEvent], None],
    stop_requested: Callable[[], bool],
    on_phase: PhaseCallback | None = None,
    on_eval: EvalCallback | None = None,
) -> JobActuals | None:
    """`run_training` as one of the job's ranks: every rank calls it with its `ranks`; rank 0
    returns the actuals of the whole job, the others None."""
    recipe = TrainingRecipe(launch, out_dir=out_dir, on_phase=on_phase, ranks=ranks)
    setup = recipe.setup()
    result = recipe.train(
        setup, on_progress=on_progress, stop_requested=stop_requested, on_eval=on_eval
    )
    artifact_bytes = recipe.save(setup, result)
    return recipe.meter(setup, result, artifact_bytes)
