"""A run's eval curve in-process: the base model, points at intervals and the final one."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.evals.points import EvalPoint
from app.evals.stats import mean_loss
from worker.training.evaluation import interval_steps
from worker.training.job import run_training
from worker.training.spec import Launch


def test_interval_steps_spread_evenly_inside_the_run() -> None:
    assert interval_steps(12, 3) == {3, 6, 9}
    assert interval_steps(10, 4) == {2, 4, 6, 8}
    assert interval_steps(3, 10) == {1, 2}  # never the start or the end, never twice
    assert interval_steps(10, 0) == set() == interval_steps(1, 4)


def test_a_completed_run_sends_its_curve_and_meters_its_final_point(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    points: list[EvalPoint] = []
    raw = {**job_spec, "max_steps": 8, "eval_points": 3, "eval_fraction": 0.25}
    act = run_training(
        launch(raw),
        out_dir=tmp_path / "out",
        on_progress=lambda e: None,
        stop_requested=lambda: False,
        on_eval=points.append,
    )
    assert [p.step for p in points] == [0, 2, 4, 6, 8]
    assert [p.final for p in points] == [False] * 4 + [True]
    assert len({p.eval_set_id for p in points}) == 1 == len({p.items for p in points})
    assert points[0].tokens == 0 and points[-1].tokens == act.tokens
    costs = [p.accrued_cost_usd for p in points]
    assert costs == sorted(costs) and costs[0] >= 0
    # The learning rate is high for this tiny model: the held-out loss falls from the base's.
    assert points[-1].loss < points[0].loss
    final = points[-1]
    again = mean_loss(final.item_loss_sums, final.item_tokens)
    assert final.loss == pytest.approx(again.value)
    assert final.loss_se == pytest.approx(again.se)
    assert final.items == len(final.item_tokens) == 16  # 25% of 64 records
    assert final.token_accuracy is not None and 0 <= final.token_accuracy <= 1
    assert final.loss_se is not None and final.loss_se > 0
    assert act.eval_loss == pytest.approx(final.loss) and act.eval_loss_se == final.loss_se
    assert (act.eval_set_id, act.eval_items) == (final.eval_set_id, 16)
    assert act.eval_s is not None and act.eval_s > 0 and math.isfinite(act.eval_s)
    assert act.data["eval_set_id"] == final.eval_set_id
