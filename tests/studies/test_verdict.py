"""The verdict from predicted intervals: the cheapest candidate that meets the target at its high
end; full fine-tuning only when every adapter misses with 80% confidence and it fits the budget;
overlaps and poor fits said; the frontier."""

from __future__ import annotations

import numpy as np

from app.estimator.spec import Method
from app.studies.fit import Interval
from app.studies.verdict import Evidence, decide, frontier

LORA, FULL, QLORA = Method.LORA, Method.FULL, Method.QLORA
NAMES = {0: "QLoRA r16", 1: "LoRA r16", 2: "LoRA r64", 3: "full fine-tuning"}


def _ev(index: int, loss: float, sd: float, cost: float, poor: str | None = None) -> Evidence:
    """Candidate `index` (0 QLoRA, 1-2 LoRA, 3 full) predicted at `loss` +- normal `sd`."""
    method = {0: QLORA, 3: FULL}.get(index, LORA)
    draws = np.random.default_rng(index).normal(loss, sd, 4000)
    low, high = (float(q) for q in np.quantile(draws, [0.1, 0.9]))
    interval = Interval(loss, low, high, 0.8, tuple(float(d) for d in draws))
    return Evidence(index, NAMES[index], method, interval, cost, poor)


def test_the_cheapest_candidate_meeting_the_target_at_its_high_end() -> None:
    items = [_ev(1, 1.21, 0.01, 40.0), _ev(2, 1.20, 0.01, 55.0), _ev(3, 1.17, 0.01, 380.0)]
    got = decide(items, target=1.25, budget_usd=None)
    assert got.candidate == 1
    assert got.reasons[0].startswith("LoRA r16 reaches 1.210 (")
    assert "for $40.00" in got.reasons[0]
    # the others, with what they would add; LoRA r64 cannot be told apart from LoRA r16
    assert any("LoRA r64" in r and "cannot be told apart" in r for r in got.reasons)
    assert any(
        r.startswith("full fine-tuning reaches 1.170") and "$340.00 more" in r for r in got.reasons
    )


def test_full_fine_tuning_on_evidence_that_every_adapter_misses() -> None:
    items = [_ev(0, 1.33, 0.01, 20.0), _ev(1, 1.31, 0.01, 40.0), _ev(3, 1.17, 0.01, 380.0)]
    got = decide(items, target=1.25, budget_usd=500.0)
    assert got.candidate == 3
    first = got.reasons[0]
    assert first.startswith(
        "LoRA tried and not enough: the best adapter, LoRA r16, is predicted at 1.310"
    )
    assert "100% confidence" in first and "$340.00 more" in first and "$500.00 budget" in first


def test_not_full_fine_tuning_over_the_budget() -> None:
    items = [_ev(1, 1.31, 0.01, 40.0), _ev(3, 1.17, 0.01, 380.0)]
    got = decide(items, target=1.25, budget_usd=100.0)
    assert got.candidate == 1
    assert any("over the $100.00 budget" in r for r in got.reasons)


def test_an_adapter_that_may_meet_the_target_keeps_the_cheaper_candidate() -> None:
    # LoRA's interval straddles the target: under 80% sure it misses, so no full fine-tuning.
    items = [_ev(1, 1.245, 0.03, 40.0), _ev(3, 1.17, 0.01, 380.0)]
    got = decide(items, target=1.25, budget_usd=None)
    assert got.candidate == 1
    assert any(r.startswith("The pilots cannot tell whether LoRA r16") for r in got.reasons)


def test_overlapping_candidates_none_meeting_the_target_the_cheaper_is_kept() -> None:
    items = [_ev(1, 1.40, 0.05, 40.0), _ev(2, 1.38, 0.05, 90.0)]
    got = decide(items, target=1.25, budget_usd=None)
    assert got.candidate == 1
    assert "No candidate is predicted to meet the target" in got.reasons[0]
    assert "cheapest of them" in got.reasons[0]


def test_a_poor_fit_is_said() -> None:
    items = [_ev(1, 1.21, 0.01, 40.0, poor="non-monotone"), _ev(3, 1.17, 0.01, 380.0)]
    got = decide(items, target=1.25, budget_usd=None)
    assert any("The fit of LoRA r16 is poor (non-monotone)" in r for r in got.reasons)


def test_no_prediction_no_candidate() -> None:
    got = decide([], target=1.0, budget_usd=None)
    assert got.candidate is None and "no pilot" in got.reasons[0]


def test_the_frontier_is_what_no_other_beats_on_both() -> None:
    items = [
        _ev(0, 1.30, 0.01, 20.0),
        _ev(1, 1.21, 0.01, 40.0),
        _ev(2, 1.25, 0.01, 55.0),  # dearer and worse than LoRA r16
        _ev(3, 1.17, 0.01, 380.0),
    ]
    assert frontier(items) == [0, 1, 3]
