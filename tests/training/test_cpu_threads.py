"""Threads of a CPU training job: the configured count, a launcher's OMP_NUM_THREADS, or all
cores but the one left to the rest of the stack."""

from __future__ import annotations

import pytest

from worker.training.cpu_threads import RESERVED_CORES, cpu_threads
from worker.training.loop import LoopResult


def test_configured_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(6, cores=16) == 6


def test_a_launchers_omp_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads(None, cores=16) == 1


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_default_leaves_a_core(monkeypatch: pytest.MonkeyPatch, cores: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty: unset for this rule
    assert cpu_threads(None, cores=cores) == max(1, cores - RESERVED_CORES)


def _loop(train_s: float, first: float | None, steps: int) -> LoopResult:
    return LoopResult(
        stop_reason="completed",
        steps=steps,
        total_steps=steps,
        tokens=1,
        tokens_processed=1,
        loss_tokens=1,
        train_s=train_s,
        final_loss=None,
        eval_loss=None,
        first_step_s=first,
    )


def test_warmup_is_the_first_step_beyond_a_steady_one() -> None:
    # 11 steps in 3 s, the first 2 s: the other ten took 0.1 s each, so 1.9 s was set-up.
    assert _loop(3.0, 2.0, 11).warmup_s == pytest.approx(1.9)
    assert _loop(3.0, 0.05, 31).warmup_s == 0.0  # a first step faster than the rest: none
    assert _loop(0.5, 0.5, 1).warmup_s == 0.0  # one step cannot tell set-up from the step
    assert _loop(0.0, None, 0).warmup_s == 0.0
