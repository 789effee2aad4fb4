"""A run's eval curve: the held-out set scored before the first step, at intervals, and at the end.

Every rank evaluates every held-out item at the same steps (an FSDP forward is a collective); the
rank that reports sends each point as an `EvalPoint` with its per-item losses, so two jobs scored
on the same eval set can later be compared item by item (app/evals/stats.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from app.evals.points import EvalPoint
from app.evals.stats import mean_loss
from worker.training.data import Batch
from worker.training.distributed import SOLO, Ranks
from worker.training.loop import EvaluationStopped, ItemLosses, StopReason, evaluate
from worker.training.model import PrecisionPlan

EvalCallback = Callable[[EvalPoint], None]


def interval_steps(total_steps: int, points: int) -> set[int]:
    """The steps strictly inside the run that `points` evaluations are spread over, evenly."""
    if points <= 0 or total_steps < 2:
        return set()
    spots = {round(k * total_steps / (points + 1)) for k in range(1, points + 1)}
    return {s for s in spots if 0 < s < total_steps}


class EvalCurve:
    """Scores the held-out batches when asked and sends each result as a point of the curve."""

    def __init__(
        self,
        *,
        model: Any,
        batches: list[Batch],
        device: torch.device,
        precision: PrecisionPlan,
        eval_set_id: str,
        total_steps: int,
        points: int,
        accrued_cost: Callable[[], float],
        elapsed: Callable[[], float],
        on_eval: EvalCallback | None,
        should_stop: Callable[[], StopReason | None] = lambda: None,
        ranks: Ranks = SOLO,
    ) -> None:
        self.model, self.batches, self.device, self.precision = model, batches, device, precision
        self.eval_set_id = eval_set_id
        self.total_steps = total_steps
        self.points = points
        self.steps = interval_steps(total_steps, points)
        self.accrued_cost, self.elapsed = accrued_cost, elapsed
        self.on_eval = on_eval
        self.should_stop, self.ranks = should_stop, ranks
        self.stopped: StopReason | None = None  # a cancel or the budget ended an evaluation
        self.seconds = 0.0
        self.final: ItemLosses | None = None

    def base(self) -> None:
        """Score the model before training (the base model's loss), when points are asked for."""
        if self.points > 0:
            self.score(0, 0)

    def after_step(self, step: int, tokens: int) -> None:
        """Score the model if `step` is one of the interval steps."""
        if step in self.steps:
            self.score(step, tokens)

    def finish(self, step: int, tokens: int) -> float | None:
        """Score the completed run; its mean loss."""
        self.final = self.score(step, tokens, final=True)
        return self.final.mean if self.final is not None else None

    def score(self, step: int, tokens: int, *, final: bool = False) -> ItemLosses | None:
        """Evaluate now and send the point (a non-finite loss is not sent)."""
        began = time.perf_counter()
        try:
            losses = evaluate(
                self.model,
                self.batches,
                device=self.device,
                precision=self.precision,
                should_stop=self.should_stop,
                ranks=self.ranks,
            )
        except EvaluationStopped as stop:  # the loop stops at its next step; no point is sent
            self.stopped = stop.reason
            return None
        finally:
            self.seconds += time.perf_counter() - began
        if losses is None or losses.mean is None or self.on_eval is None:
            return losses
        stats = mean_loss(losses.loss_sums, losses.tokens)
        self.on_eval(
            EvalPoint(
                step=step,
                total_steps=self.total_steps,
                tokens=tokens,
                elapsed_s=self.elapsed(),
                accrued_cost_usd=self.accrued_cost(),
                final=final,
                eval_set_id=self.eval_set_id,
                loss=losses.mean,
                loss_se=stats.se if stats.items > 1 else None,
                token_accuracy=losses.token_accuracy,
                items=stats.items,
                loss_tokens=stats.tokens,
                item_loss_sums=[float(x) for x in losses.loss_sums],
                item_tokens=losses.tokens,
            )
        )
        return losses
