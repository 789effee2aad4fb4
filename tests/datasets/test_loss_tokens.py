"""Minimum seq_len per example and the truncation check read from stored statistics."""

from __future__ import annotations

import math
import random

from app.datasets import loss_tokens
from app.datasets.formats import Example, RecordFormat
from app.datasets.tokens import TokenTally, approximate_counter, approximate_tokens


def test_text_examples_always_keep_a_loss_token() -> None:
    measured = approximate_counter().measure([Example(RecordFormat.TEXT, "word " * 50)])
    assert measured == [(approximate_tokens("word " * 50), 2)]


def test_approximate_counts_mask_the_prompt_and_check_counts_drops() -> None:
    prompts = ["p" * (40 * k) for k in range(1, 6)]  # 10, 20, ... 50 approximate tokens
    examples = [
        Example(RecordFormat.PROMPT_COMPLETION, prompt + "an answer", len(prompt))
        for prompt in prompts
    ]
    mins = [m for _, m in approximate_counter().measure(examples)]
    assert mins == [approximate_tokens(p) + 1 for p in prompts]
    stats = {"tokenizer": "approximate", **loss_tokens.histogram(mins)}
    check = loss_tokens.check(stats, seq_len=approximate_tokens(prompts[2]) + 1)
    assert check is not None
    assert (check.examples, check.dropped) == (5, 2)
    assert check.seq_len_keeping_all == mins[-1]
    assert "leaves 2 of 5 examples" in check.note() and check.approximate
    assert "approximate token counts" in check.note()


def test_datasets_uploaded_before_the_histogram_have_no_check() -> None:
    assert loss_tokens.check({"examples": 3, "max_tokens": 9}, seq_len=4) is None


def test_a_streamed_tally_gives_the_statistics_of_the_whole_list() -> None:
    rng = random.Random(7)
    measured = [(rng.randint(1, 400), rng.choice([None, rng.randint(2, 50)])) for _ in range(999)]
    tally = TokenTally()
    for start in range(0, len(measured), 128):
        tally.add(measured[start : start + 128])
    ordered = sorted(n for n, _ in measured)
    stats = tally.stats()
    assert stats.examples == 999 and stats.total_tokens == sum(ordered)
    assert stats.p50_tokens == ordered[math.ceil(0.5 * 999) - 1]
    assert stats.p95_tokens == ordered[math.ceil(0.95 * 999) - 1]
    assert (stats.min_tokens, stats.max_tokens) == (ordered[0], ordered[-1])
    assert tally.histogram() == loss_tokens.histogram(m for _, m in measured)
