"""The held-out split and eval statistics: content-decided sets, the ratio standard error, pairs."""

from __future__ import annotations

import numpy as np
import pytest

from app.evals import holdout
from app.evals.stats import NotPaired, cost_per_improvement, mean_loss, paired_difference


def test_the_eval_set_follows_content_and_keeps_duplicates_together() -> None:
    contents = [f"record {i % 150}" for i in range(300)]  # every record twice
    train, held = holdout.split_indexes(contents, fraction=0.1)
    assert len(held) == 30 and len(train) == 270
    held_texts = {contents[i] for i in held}
    assert held_texts.isdisjoint({contents[i] for i in train})  # no duplicate straddles it
    shuffled = contents[::-1]
    _, held_again = holdout.split_indexes(shuffled, fraction=0.1)
    assert {shuffled[i] for i in held_again} == held_texts
    big = [f"row {i}" for i in range(20_000)]
    assert len(holdout.split_indexes(big, fraction=0.5)[1]) == holdout.MAX_EVAL_ITEMS


def test_fractions_are_nested_and_at_least_one_example() -> None:
    contents = [f"row {i}" for i in range(1000)]
    picks = [set(holdout.fraction_indexes(contents, fraction=f)) for f in (0.001, 0.05, 0.2, 1.0)]
    assert [len(p) for p in picks] == [1, 50, 200, 1000]
    assert picks[0] < picks[1] < picks[2] < picks[3]
    assert holdout.eval_set_id([([1, 2], [1, 2])]) != holdout.eval_set_id([([1, 2], [-100, 2])])


def test_the_standard_error_matches_its_sampling_spread() -> None:
    # Items of random length and difficulty: the spread of the mean over many draws of items is
    # what the linearised standard error of one draw predicts.
    rng = np.random.default_rng(5)
    values, ses = [], []
    for _ in range(2000):
        tokens = rng.integers(5, 60, size=80)
        per_token = 2.0 + rng.normal(0, 0.5, size=80)  # the item's difficulty
        sums = per_token * tokens + rng.normal(0, 1.0, size=80) * np.sqrt(tokens)
        m = mean_loss(sums.tolist(), tokens.tolist())
        values.append(m.value)
        ses.append(m.se)
    assert np.mean(ses) == pytest.approx(np.std(values), rel=0.08)
    assert mean_loss([4.0, 6.0], [2, 2]).value == pytest.approx(2.5)
    assert np.isnan(mean_loss([3.0], [2]).se)


def test_pairing_removes_what_the_items_share() -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(10, 40, size=200)
    difficulty = rng.normal(3.0, 1.0, size=200) * tokens  # shared by both jobs
    a = difficulty + rng.normal(0, 0.5, size=200)
    b = difficulty - 0.05 * tokens + rng.normal(0, 0.5, size=200)
    diff = paired_difference(a.tolist(), b.tolist(), tokens.tolist(), tokens.tolist())
    unpaired = np.hypot(
        mean_loss(a.tolist(), tokens.tolist()).se, mean_loss(b.tolist(), tokens.tolist()).se
    )
    assert diff.value == pytest.approx(0.05, abs=0.01)
    assert diff.se < unpaired / 10
    with pytest.raises(NotPaired):
        paired_difference([1.0], [1.0, 2.0], [1], [1, 1])


def test_cost_per_improvement_prices_each_nat_removed() -> None:
    assert cost_per_improvement(40.0, 1.45, 1.25) == pytest.approx(200.0)  # $40 for 0.2 nats
    assert cost_per_improvement(0.0, 1.45, 1.25) == 0.0
    assert cost_per_improvement(40.0, 1.25, 1.25) is None  # nothing gained: no price
    assert cost_per_improvement(40.0, 1.25, 1.30) is None
    assert cost_per_improvement(40.0, float("nan"), 1.0) is None
    assert cost_per_improvement(-1.0, 1.5, 1.0) is None
