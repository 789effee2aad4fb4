"""Minimum seq_len per example, loss tokens per seq_len, and the truncation check."""

from __future__ import annotations

import math
import random

from app.datasets import loss_tokens
from app.datasets.formats import Example, RecordFormat
from app.datasets.tokens import Measure, TokenTally, approximate_counter, approximate_tokens


def test_text_examples_always_keep_a_loss_token() -> None:
    measured = approximate_counter().measure([Example(RecordFormat.TEXT, "word " * 50)])
    n = approximate_tokens("word " * 50)
    assert measured == [Measure(tokens=n, first_loss=1, length=n + 1)]


def test_approximate_counts_mask_the_prompt_and_check_counts_drops() -> None:
    prompts = ["p" * (40 * k) for k in range(1, 6)]  # 10, 20, ... 50 approximate tokens
    examples = [
        Example(RecordFormat.PROMPT_COMPLETION, prompt + "an answer", len(prompt))
        for prompt in prompts
    ]
    measured = approximate_counter().measure(examples)
    mins = [loss_tokens.min_seq_len(m.first_loss) for m in measured]
    assert mins == [approximate_tokens(p) + 1 for p in prompts]
    stats = {
        "tokenizer": "approximate",
        **loss_tokens.histogram((m.first_loss, m.length) for m in measured),
    }
    check = loss_tokens.check(stats, seq_len=approximate_tokens(prompts[2]) + 1)
    assert check is not None
    assert (check.examples, check.dropped) == (5, 2)
    assert check.seq_len_keeping_all == mins[-1]
    assert "leaves 2 of 5 examples" in check.note() and check.approximate
    assert "approximate token counts" in check.note()


def test_loss_tokens_from_the_histograms_equal_a_direct_count() -> None:
    rng = random.Random(3)
    pairs: list[tuple[int | None, int]] = []
    for _ in range(500):
        length = rng.randint(2, 300)
        first = rng.randint(1, length + 20)
        pairs.append((first if first < length else None, length))
    stats = loss_tokens.histogram(pairs)
    for seq_len in (1, 2, 7, 64, 150, 299, 300, 1000):
        direct = sum(
            max(0, min(seq_len, length) - first) for first, length in pairs if first is not None
        )
        assert loss_tokens.loss_tokens_at(stats, seq_len=seq_len) == direct


def test_datasets_uploaded_before_the_histogram_have_no_check() -> None:
    assert loss_tokens.check({"examples": 3, "max_tokens": 9}, seq_len=4) is None
    old = {loss_tokens.HISTOGRAM_KEY: [[3, 2]], loss_tokens.NEVER_KEY: 0}
    check = loss_tokens.check(old, seq_len=4)
    assert check is not None and check.loss_tokens is None


def test_a_streamed_tally_gives_the_statistics_of_the_whole_list() -> None:
    rng = random.Random(7)
    measured = []
    for _ in range(999):
        n = rng.randint(1, 400)
        first = rng.choice([None, rng.randint(1, n)])
        measured.append(Measure(tokens=n, first_loss=first, length=n + 1))
    tally = TokenTally()
    for start in range(0, len(measured), 128):
        tally.add(measured[start : start + 128])
    ordered = sorted(m.tokens for m in measured)
    stats = tally.stats()
    assert stats.examples == 999 and stats.total_tokens == sum(ordered)
    assert stats.p50_tokens == ordered[math.ceil(0.5 * 999) - 1]
    assert stats.p95_tokens == ordered[math.ceil(0.95 * 999) - 1]
    assert (stats.min_tokens, stats.max_tokens) == (ordered[0], ordered[-1])
    assert tally.histogram() == loss_tokens.histogram((m.first_loss, m.length) for m in measured)
