"""A plain PyTorch training loop: gradient accumulation, clipping, mixed precision, stop checks.

Per optimizer step it does one host sync (the loss, needed for the NaN check and progress) and
calls `on_progress`, which must be cheap (the runner hands events to a sender thread). Callers
throttle anything slow, such as database writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from worker.training.data import IGNORE_INDEX, Batch
from worker.training.distributed import SOLO, Ranks
from worker.training.errors import NanLossError, OutOfMemory
from worker.training.messages import ProgressEvent
from worker.training.model import PrecisionPlan

StopReason = Literal["completed", "budget_exceeded", "cancelled"]
# Called after an optimizer step with (step, real tokens trained so far); its time is not
# training time (evaluations at intervals run there).
AfterStep = Callable[[int, int], None]


@dataclass
class LoopResult:
    """How the loop ended and what it processed."""

    stop_reason: StopReason
    steps: int
    total_steps: int
    tokens: int
    tokens_processed: int
    loss_tokens: int
    train_s: float
    final_loss: float | None
    eval_loss: float | None
    first_step_s: float | None = None  # the first optimizer step alone
    paused_s: float = 0.0  # spent in `after_step` (evaluations), not in train_s

    @property
    def warmup_s(self) -> float:
        """What the first step took beyond a steady one: one-time set-up inside the loop (lazy
        kernel and allocator initialisation, first-touch of the weights). 0 below two steps."""
        if self.first_step_s is None or self.steps < 2:
            return 0.0
        steady = (self.train_s - self.first_step_s) / (self.steps - 1)
        return max(self.first_step_s - steady, 0.0)


def plan_total_steps(
    *,
    n_sequences: int,
    micro_batch_size: int,
    grad_accum: int,
    epochs: float,
    max_steps: int | None,
) -> int:
    """Optimizer steps to run: `max_steps` when given (as in HF Trainer), else from the epochs."""
    if max_steps is not None:
        return max_steps
    micro_per_epoch = math.ceil(n_sequences / micro_batch_size)
    return max(1, math.ceil(math.ceil(epochs * micro_per_epoch) / grad_accum))


def _autocast(
    device: torch.device, precision: PrecisionPlan
) -> contextlib.AbstractContextManager[Any]:
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


def _forward_loss(model: Any, batch: Batch, device: torch.device) -> torch.Tensor:
    out = model(
        input_ids=batch.input_ids.to(device, non_blocking=True),
        attention_mask=batch.attention_mask.to(device, non_blocking=True),
        labels=batch.labels.to(device, non_blocking=True),
    )
    loss: torch.Tensor = out.loss  # mean over this micro-batch's loss tokens
    return loss


def train_loop(
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterator[Batch],
    total_steps: int,
    grad_accum: int,
    device: torch.device,
    precision: PrecisionPlan,
    max_grad_norm: float | None,
    on_progress: Callable[[ProgressEvent], None],
    should_stop: Callable[[], StopReason | None],
    accrued_cost: Callable[[], float],
    elapsed: Callable[[], float],
    ranks: Ranks = SOLO,
    after_step: AfterStep | None = None,
) -> LoopResult:
    """Run up to `total_steps` optimizer steps; stop early when `should_stop` names a reason.

    With several ranks, `batches` is this rank's shard and `grad_accum` its micro-batches per
    step; losses, token counts and the stop decision are over all ranks (see distributed.py).
    `after_step` runs after each step's progress event; its time is left out of `train_s`.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(device.type) if precision.grad_scaler else None
    tokens = processed = loss_tokens = 0
    step = 0
    final_loss: float | None = None
    reason: StopReason = "completed"
    start = time.perf_counter()
    paused = 0.0
    first_step_s: float | None = None
    try:
        while step < total_steps:
            window = [next(batches) for _ in range(grad_accum)]
            stop = should_stop()
            # One reduction answers both: the window's loss tokens over all ranks, and whether
            # any rank must stop (every rank then leaves the loop at this same step).
            window_tokens, cancels, budgets = ranks.sum(
                [sum(b.loss_tokens for b in window), stop == "cancelled", stop == "budget_exceeded"]
            )
            if cancels or budgets:
                reason = "cancelled" if cancels else "budget_exceeded"
                break
            window_tokens = max(1.0, window_tokens)
            loss_sum = torch.zeros((), device=device)
            counts = [0, 0, 0]
            for batch in window:
                with _autocast(device, precision):
                    # Weight each micro-batch by its share of the global window's loss tokens,
                    # so the step's loss is the token mean over the whole window. DDP and FSDP
                    # average gradients over ranks: scaling by world_size makes that a sum.
                    loss = _forward_loss(model, batch, device) * (batch.loss_tokens / window_tokens)
                scaled = loss * ranks.world_size
                (scaler.scale(scaled) if scaler else scaled).backward()
                loss_sum += loss.detach().float()
                counts[0] += batch.real_tokens
                counts[1] += batch.processed_tokens
                counts[2] += batch.loss_tokens
            value, *totals = ranks.sum([float(loss_sum.item()), *counts])
            tokens += int(totals[0])
            processed += int(totals[1])
            loss_tokens += int(totals[2])
            if not math.isfinite(value):
                raise NanLossError(step + 1, value)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            final_loss = value
            train_s = time.perf_counter() - start - paused
            if first_step_s is None:
                first_step_s = train_s
            on_progress(
                ProgressEvent(
                    step=step,
                    total_steps=total_steps,
                    loss=value,
                    tokens=tokens,
                    tokens_per_s=tokens / train_s if train_s > 0 else 0.0,
                    elapsed_s=elapsed(),
                    accrued_cost_usd=accrued_cost(),
                )
            )
            if after_step is not None:
                began = time.perf_counter()
                after_step(step, tokens)
                paused += time.perf_counter() - began
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        raise OutOfMemory(f"out of memory at step {step + 1}: {exc}") from exc
    return LoopResult(
        stop_reason=reason,
        steps=step,
        total_steps=total_steps,
        tokens=tokens,
        tokens_processed=processed,
        loss_tokens=loss_tokens,
        train_s=time.perf_counter() - start - paused,
        final_loss=final_loss,
        eval_loss=None,
        first_step_s=first_step_s,
        paused_s=paused,
    )


@dataclass(frozen=True)
class ItemLosses:
    """Per held-out item: summed token loss, loss tokens, and tokens predicted right."""

    loss_sums: list[float]
    tokens: list[int]
    correct: list[int]

    @property
    def mean(self) -> float | None:
        """The token-weighted mean loss (None when no item has a loss token or it is not finite)."""
        total = sum(self.tokens)
        value = math.fsum(self.loss_sums) / total if total else math.nan
        return value if math.isfinite(value) else None

    @property
    def token_accuracy(self) -> float | None:
        """Share of loss tokens whose most likely prediction was the label."""
        total = sum(self.tokens)
        return sum(self.correct) / total if total else None


class EvaluationStopped(Exception):
    """A cancel or a crossed budget ended an evaluation before its last batch."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason)
        self.reason: StopReason = reason


@torch.no_grad()
def evaluate(
    model: Any,
    batches: Sequence[Batch],
    *,
    device: torch.device,
    precision: PrecisionPlan,
    should_stop: Callable[[], StopReason | None] = lambda: None,
    ranks: Ranks = SOLO,
) -> ItemLosses | None:
    """Every held-out item's summed loss, loss tokens and correct tokens (None without items).

    The losses are torch's cross entropy per target token in fp32, as the training loss takes
    them (after the causal shift, labels of -100 skipped), summed per item. Evaluation spends
    money too: before each batch the ranks agree whether to go on, and a cancel or a crossed
    budget (`should_stop`) raises EvaluationStopped, as the training loop stops at a step.
    """
    if not batches:
        return None
    model.eval()
    sums: list[float] = []
    tokens: list[int] = []
    correct: list[int] = []
    for batch in batches:
        stop = should_stop()
        cancels, budgets = ranks.sum([stop == "cancelled", stop == "budget_exceeded"])
        if cancels or budgets:
            model.train()
            raise EvaluationStopped("cancelled" if cancels else "budget_exceeded")
        with _autocast(device, precision):
            logits = model(
                input_ids=batch.input_ids.to(device, non_blocking=True),
                attention_mask=batch.attention_mask.to(device, non_blocking=True),
            ).logits
        labels = batch.labels[:, 1:].to(device, non_blocking=True)
        shifted = logits[:, :-1, :].float()
        per_token = torch.nn.functional.cross_entropy(
            shifted.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        mask = labels != IGNORE_INDEX
        sums += per_token.double().mul(mask).sum(dim=1).tolist()
        tokens += mask.sum(dim=1).tolist()
        correct += ((shifted.argmax(dim=-1) == labels) & mask).sum(dim=1).tolist()
    model.train()
    return ItemLosses(sums, [int(t) for t in tokens], [int(c) for c in correct])


def directory_bytes(path: Path) -> int:
    """Total size of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def save_artifact(
    model: Any, tokenizer: Any, out_dir: Path, *, state_dict: dict[str, Any] | None = None
) -> int:
    """Save the adapter (peft) or the full checkpoint with its tokenizer; return bytes written.

    `state_dict`: the weights gathered from sharded ranks (default: the model's own).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(out_dir, safe_serialization=True, **extra)
    tokenizer.save_pretrained(out_dir)
    return directory_bytes(out_dir)
