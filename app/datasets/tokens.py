"""Token counts per example: the model's own tokenizer when it is local, else an approximation.

The approximation is never silent: statistics carry `tokenizer="approximate"` and say how.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.errors import InvalidInput

# OpenAI's rule of thumb for English text: "one token generally corresponds to ~4 characters"
# (help.openai.com, "What are tokens and how to count them?"). BPE tokenizers of the Llama,
# Mistral and Qwen families land within ~20% of it on English prose; code, non-Latin scripts and
# numbers take more tokens per character, so treat approximate counts as a lower-side guess.
CHARS_PER_TOKEN = 4.0
APPROXIMATE = "approximate"
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


class TokenCounter:
    """Counts tokens for batches of texts; `name` says which tokenizer did it."""

    def __init__(self, name: str, count_batch: Callable[[Sequence[str]], list[int]]) -> None:
        self.name = name
        self._count_batch = count_batch

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, special tokens the tokenizer adds (BOS, ...) included."""
        return self._count_batch(texts) if texts else []

    @property
    def is_approximate(self) -> bool:
        """Whether the counts come from the characters-per-token rule."""
        return self.name == APPROXIMATE


def approximate_counter() -> TokenCounter:
    """The documented approximation, used when no local tokenizer is available."""
    return TokenCounter(APPROXIMATE, lambda texts: [approximate_tokens(t) for t in texts])


def tokenizer_counter(folder: Path, *, label: str) -> TokenCounter:
    """A counter using the tokenizer saved in `folder` (already confined to the model roots)."""
    tokenizer = load_tokenizer(str(folder))

    def _count(texts: Sequence[str]) -> list[int]:
        encoded = tokenizer(list(texts), add_special_tokens=True, return_attention_mask=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return TokenCounter(label, _count)


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


def summarize(counts: Sequence[int]) -> TokenStats:
    """Statistics of per-example token counts; `counts` must not be empty."""
    ordered = sorted(counts)
    n = len(ordered)

    def rank(q: float) -> int:
        # Nearest-rank percentile: the smallest value with at least q of the data at or below it.
        return ordered[max(0, math.ceil(q * n) - 1)]

    total = sum(ordered)
    return TokenStats(
        examples=n,
        total_tokens=total,
        mean_tokens=total / n,
        p50_tokens=rank(0.50),
        p95_tokens=rank(0.95),
        max_tokens=ordered[-1],
        min_tokens=ordered[0],
    )
