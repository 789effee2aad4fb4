"""Which examples keep a token to learn from once truncated to `seq_len`.

The worker (worker/training/data.py) masks prompt tokens out of the loss (its default
`mask_prompt`), appends EOS (learned) when the tokenizer did not, truncates each example to
`seq_len` and drops those left with no loss token; after the causal shift position 0 is never a
target. So an example whose first unmasked position is j (j >= 1) survives only when
`seq_len >= j + 1`: its *minimum seq_len*. Upload records the minimum of every example as a
histogram in the dataset's stats; an estimate reads how many examples its `seq_len` drops and
which `seq_len` would keep them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

APPROXIMATE = "approximate"  # the stats' tokenizer name for character-count approximations

HISTOGRAM_KEY = "min_seq_len_histogram"  # [[min seq_len, examples], ...], ascending
LENGTH_KEY = "length_histogram"  # [[tokens as trained, EOS included, examples], ...], ascending
NEVER_KEY = "examples_without_loss_tokens"  # no seq_len gives them a token to learn from
KEEP_MOST = 0.95  # the second suggestion: the seq_len that keeps this share of the examples


def first_loss(*, prompt_tokens: int, n_tokens: int, appends_eos: bool) -> int | None:
    """First position (>= 1) whose label the worker keeps, or None if it keeps none.

    Labels from `prompt_tokens` on are kept (`app.datasets.encode`); the EOS the worker appends
    sits at position `n_tokens` and is learned; position 0 is never a target."""
    first = max(1, prompt_tokens)
    return first if first < n_tokens + int(appends_eos) else None


def min_seq_len(first: int | None) -> int | None:
    """Shortest `seq_len` that leaves an example whose first kept label is at `first` a token
    to learn from; None if none does."""
    return None if first is None else first + 1


def histogram(values: Iterable[tuple[int | None, int]]) -> dict[str, Any]:
    """The stats entries recording, per example, its minimum seq_len and (of those that keep a
    label) its length as trained, EOS included: `(first kept label, length)` pairs in."""
    return histogram_of_counts(Counter(values))


def histogram_of_counts(counts: Mapping[tuple[int | None, int], int]) -> dict[str, Any]:
    """`histogram` from how many examples have each `(first kept label, length)` pair."""
    shortest: Counter[int] = Counter()
    lengths: Counter[int] = Counter()
    never = 0
    for (first, length), k in counts.items():
        if first is None:
            never += k
        else:
            shortest[first + 1] += k
            lengths[length] += k
    return {
        HISTOGRAM_KEY: [[k, shortest[k]] for k in sorted(shortest)],
        LENGTH_KEY: [[k, lengths[k]] for k in sorted(lengths)],
        NEVER_KEY: never,
    }


def loss_tokens_at(stats: Mapping[str, Any], *, seq_len: int) -> int | None:
    """Labels the worker learns from once every example is cut to `seq_len` (no packing).

    An example with its first kept label at f and trained length n keeps min(seq_len, n) - f
    labels when f < seq_len, none otherwise. Summed over examples this needs only the two
    histograms (f + 1 and n):  seq_len * #{f < seq_len} - sum{f < seq_len} f
    - sum{n < seq_len} (seq_len - n), since f < n for every example counted.
    """
    firsts, lengths = stats.get(HISTOGRAM_KEY), stats.get(LENGTH_KEY)
    if firsts is None or lengths is None:
        return None
    kept = [(m - 1, k) for m, k in firsts if m - 1 < seq_len]
    total = seq_len * sum(k for _, k in kept) - sum(f * k for f, k in kept)
    return int(total - sum((seq_len - n) * k for n, k in lengths if n < seq_len))


@dataclass(frozen=True)
class TruncationCheck:
    """What truncating a stored dataset to `seq_len` does to its examples."""

    seq_len: int
    examples: int
    dropped: int  # left with no loss token: the worker drops them
    seq_len_keeping_all: int | None  # smallest seq_len keeping every example that can be kept
    seq_len_keeping_most: int | None  # ... keeping KEEP_MOST of them
    approximate: bool  # counted by an approximation, not the model's tokenizer
    tokenizer: str | None  # what counted: a model folder, or APPROXIMATE
    loss_tokens: int | None  # labels learned from at this seq_len (None: uploaded before)

    def note(self) -> str:
        """The sentence an estimate carries."""
        text = (
            f"seq_len {self.seq_len} leaves {self.dropped} of {self.examples} examples with no "
            "token to learn from (their prompt fills the first seq_len tokens; the worker masks "
            "prompts out of the loss and drops such examples), so the run trains on "
            f"{self.examples - self.dropped}; hours and cost above count all {self.examples}"
        )
        if self.seq_len_keeping_all is not None:
            text += f". seq_len {self.seq_len_keeping_all} keeps every example"
            most = self.seq_len_keeping_most
            if most is not None and most < self.seq_len_keeping_all:
                text += f", {most} keeps {KEEP_MOST:.0%} of them"
        if self.approximate:
            text += " (approximate token counts: upload with model_path for exact ones)"
        return text


def check(stats: Mapping[str, Any], *, seq_len: int) -> TruncationCheck | None:
    """How many examples `seq_len` drops, from stats recorded at upload (None if not recorded)."""
    pairs = stats.get(HISTOGRAM_KEY)
    if pairs is None:
        return None
    never = int(stats.get(NEVER_KEY, 0))
    keepable = sum(n for _, n in pairs)
    total = keepable + never
    dropped = never + sum(n for length, n in pairs if length > seq_len)
    return TruncationCheck(
        seq_len=seq_len,
        examples=total,
        dropped=dropped,
        seq_len_keeping_all=pairs[-1][0] if pairs else None,
        seq_len_keeping_most=_quantile(pairs, KEEP_MOST * keepable),
        approximate=stats.get("tokenizer") == APPROXIMATE,
        tokenizer=stats.get("tokenizer"),
        loss_tokens=loss_tokens_at(stats, seq_len=seq_len),
    )


def _quantile(pairs: Sequence[Sequence[int]], wanted: float) -> int | None:
    seen = 0
    for length, n in pairs:
        seen += n
        if seen >= wanted:
            return int(length)
    return None
