"""Token counts per example: the model's own tokenizer when it is local, else an approximation.

The approximation is never silent: statistics carry `tokenizer="approximate"` and say how.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.datasets.formats import Example, RecordFormat
from app.datasets.loss_tokens import (
    APPROXIMATE,
    HISTOGRAM_KEY,
    NEVER_KEY,
    first_loss_position,
    masks_prompt,
    min_seq_len,
)
from app.errors import InvalidInput

# OpenAI's rule of thumb for English text: "one token generally corresponds to ~4 characters"
# (help.openai.com, "What are tokens and how to count them?"). BPE tokenizers of the Llama,
# Mistral and Qwen families land within ~20% of it on English prose; code, non-Latin scripts and
# numbers take more tokens per character, so treat approximate counts as a lower-side guess.
CHARS_PER_TOKEN = 4.0
APPROXIMATION_NOTE = (
    f"no local tokenizer was given: tokens = ceil(characters / {CHARS_PER_TOKEN:g}) per example "
    "(OpenAI's ~4 characters per token guidance for English); pass model_path for exact counts"
)
# Texts handed to a fast tokenizer at once: large enough to use its batching, small enough
# that a batch of long examples stays a few MB.
TOKENIZE_BATCH = 256


def approximate_tokens(text: str) -> int:
    """Tokens of `text` by the characters-per-token rule (at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@lru_cache(maxsize=8)
def load_tokenizer(folder: str) -> Any:
    """The tokenizer saved in a local model folder (never downloaded, never remote code)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise InvalidInput(
            f"model_path has no tokenizer that transformers can load: {exc}", field="model_path"
        ) from None


Measured = list[tuple[int, int | None]]  # (tokens, minimum seq_len keeping a loss token)


class TokenCounter:
    """Counts tokens for batches of examples; `name` says which tokenizer did it."""

    def __init__(self, name: str, measure_batch: Callable[[Sequence[Example]], Measured]) -> None:
        self.name = name
        self._measure_batch = measure_batch

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, special tokens the tokenizer adds (BOS, ...) included."""
        return [n for n, _ in self.measure([Example(RecordFormat.TEXT, t) for t in texts])]

    def measure(self, examples: Sequence[Example]) -> Measured:
        """Per example: its tokens (as `count`) and the shortest seq_len that leaves it a token
        to learn from in the worker (`loss_tokens.min_seq_len`)."""
        return self._measure_batch(examples) if examples else []

    @property
    def is_approximate(self) -> bool:
        """Whether the counts come from the characters-per-token rule."""
        return self.name == APPROXIMATE


def _approximate(examples: Sequence[Example]) -> Measured:
    out: Measured = []
    for example in examples:
        n = approximate_tokens(example.text)
        first = first_loss_position(example, None, approximate_tokens(example.prompt))
        out.append((n, min_seq_len(n_tokens=n, first_loss=first, appends_eos=True)))
    return out


def approximate_counter() -> TokenCounter:
    """The documented approximation, used when no local tokenizer is available."""
    return TokenCounter(APPROXIMATE, _approximate)


def tokenizer_counter(folder: Path, *, label: str) -> TokenCounter:
    """A counter using the tokenizer saved in `folder` (already confined to the model roots)."""
    tokenizer = load_tokenizer(str(folder))
    fast = bool(getattr(tokenizer, "is_fast", False))
    eos = tokenizer.eos_token_id

    def _measure(examples: Sequence[Example]) -> Measured:
        encoded = tokenizer(
            [e.text for e in examples],
            add_special_tokens=True,
            return_attention_mask=False,
            return_offsets_mapping=fast,
        )
        out: Measured = []
        for i, example in enumerate(examples):
            ids = encoded["input_ids"][i]
            ends = [end for _, end in encoded["offset_mapping"][i]] if fast else None
            n_prompt = None
            if not fast and masks_prompt(example):  # the worker's slow-tokenizer path
                n_prompt = len(tokenizer(example.prompt, add_special_tokens=True).input_ids)
            first = first_loss_position(example, ends, n_prompt)
            appends = eos is not None and (not ids or ids[-1] != eos)
            out.append(
                (len(ids), min_seq_len(n_tokens=len(ids), first_loss=first, appends_eos=appends))
            )
        return out

    return TokenCounter(label, _measure)


@dataclass(frozen=True)
class TokenStats:
    """Distribution of tokens per example (nearest-rank percentiles)."""

    examples: int
    total_tokens: int
    mean_tokens: float
    p50_tokens: int
    p95_tokens: int
    max_tokens: int
    min_tokens: int


class TokenTally:
    """Per-example counts folded in as they are measured: memory grows with the distinct
    counts seen, not with the examples (a dataset's lines are streamed, never all kept)."""

    def __init__(self) -> None:
        self.tokens: Counter[int] = Counter()
        self.min_seq_lens: Counter[int] = Counter()
        self.without_loss_tokens = 0

    def add(self, measured: Measured) -> None:
        """Fold in one batch of (tokens, minimum seq_len) pairs."""
        for n_tokens, shortest in measured:
            self.tokens[n_tokens] += 1
            if shortest is None:
                self.without_loss_tokens += 1
            else:
                self.min_seq_lens[shortest] += 1

    @property
    def examples(self) -> int:
        """How many examples were folded in."""
        return self.tokens.total()

    def stats(self) -> TokenStats:
        """The distribution of tokens per example (at least one example must be in)."""
        return summarize_counts(self.tokens)

    def histogram(self) -> dict[str, Any]:
        """The stats entries recording each example's minimum seq_len (loss_tokens.histogram)."""
        pairs = [[k, self.min_seq_lens[k]] for k in sorted(self.min_seq_lens)]
        return {HISTOGRAM_KEY: pairs, NEVER_KEY: self.without_loss_tokens}


def summarize_counts(counts: Counter[int]) -> TokenStats:
    """Statistics from how many examples have each token count; `counts` must not be empty."""
    ordered = sorted(counts.items())
    n = sum(k for _, k in ordered)

    def rank(q: float) -> int:
        # Nearest-rank percentile: the smallest value with at least q of the data at or below it.
        wanted, seen = max(1, math.ceil(q * n)), 0
        for value, k in ordered:
            seen += k
            if seen >= wanted:
                return value
        return ordered[-1][0]

    total = sum(value * k for value, k in ordered)
    return TokenStats(
        examples=n,
        total_tokens=total,
        mean_tokens=total / n,
        p50_tokens=rank(0.50),
        p95_tokens=rank(0.95),
        max_tokens=ordered[-1][0],
        min_tokens=ordered[0][0],
    )
