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

from app.datasets.formats import Example, RecordFormat

APPROXIMATE = "approximate"  # the stats' tokenizer name for character-count approximations

HISTOGRAM_KEY = "min_seq_len_histogram"  # [[min seq_len, examples], ...], ascending
NEVER_KEY = "examples_without_loss_tokens"  # no seq_len gives them a token to learn from
KEEP_MOST = 0.95  # the second suggestion: the seq_len that keeps this share of the examples


def masks_prompt(example: Example) -> bool:
    """Whether the worker's default masking takes `example`'s prompt out of the loss."""
    return example.prompt_chars > 0 and example.format is not RecordFormat.TEXT


def first_loss_position(
    example: Example, token_ends: Sequence[int] | None, n_prompt_tokens: int | None
) -> int | None:
    """First position >= 1 whose label the worker keeps, among the tokenizer's own tokens.

    `token_ends`: each token's end offset in `example.text` (fast tokenizers; special tokens end
    at 0); else `n_prompt_tokens`: what the prompt alone encodes to (the worker's slow path).
    None when every token is masked (the appended EOS may still be learned)."""
    if not masks_prompt(example):
        return 1
    if token_ends is not None:
        ends = token_ends
        return next((j for j in range(1, len(ends)) if ends[j] > example.prompt_chars), None)
    assert n_prompt_tokens is not None
    return max(1, n_prompt_tokens)


def min_seq_len(*, n_tokens: int, first_loss: int | None, appends_eos: bool) -> int | None:
    """Shortest `seq_len` that leaves the example a loss token; None if none does."""
    if first_loss is not None and first_loss < n_tokens:
        return first_loss + 1
    if appends_eos and n_tokens >= 1:  # the EOS the worker appends sits at position n_tokens
        return n_tokens + 1
    return None


def histogram(values: Iterable[int | None]) -> dict[str, Any]:
    """The stats entries recording each example's minimum seq_len."""
    counts: Counter[int] = Counter()
    never = 0
    for value in values:
        if value is None:
            never += 1
        else:
            counts[value] += 1
    return {HISTOGRAM_KEY: [[k, counts[k]] for k in sorted(counts)], NEVER_KEY: never}


@dataclass(frozen=True)
class TruncationCheck:
    """What truncating a stored dataset to `seq_len` does to its examples."""

    seq_len: int
    examples: int
    dropped: int  # left with no loss token: the worker drops them
    seq_len_keeping_all: int | None  # smallest seq_len keeping every example that can be kept
    seq_len_keeping_most: int | None  # ... keeping KEEP_MOST of them
    approximate: bool  # counted by characters / 4, not the model's tokenizer

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
    )


def _quantile(pairs: Sequence[Sequence[int]], wanted: float) -> int | None:
    seen = 0
    for length, n in pairs:
        seen += n
        if seen >= wanted:
            return int(length)
    return None
