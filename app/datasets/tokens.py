"""Token counts per example: the model's own tokenizer when it is local, else an approximation.

The approximation is never silent: statistics carry `tokenizer="approximate"` and say how.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from app.datasets import loss_tokens
from app.datasets.encode import appends_eos, encode, masks_prompt
from app.datasets.formats import ChatRenderer, Example, Message, RecordFormat, last_reply
from app.datasets.loss_tokens import APPROXIMATE, first_loss
from app.errors import InvalidInput

# OpenAI's rule of thumb for English text: "one token generally corresponds to ~4 characters"
# (help.openai.com, "What are tokens and how to count them?").
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True, slots=True)
class Approximation:
    """Tokens counted as characters / `chars_per_token`, off by up to `error` (relative)."""

    chars_per_token: float
    error: float
    basis: str


# Measured by bench/tokenizer_families.py (2026-12) with real tokenizers: llama.cpp's
# vocabulary GGUFs of each family (llama-cpp-python 0.3.36's source distribution, PyPI) loaded by
# transformers, over three kinds of text (English prose, Python source, rendered fine-tuning
# records), each kind weighing the same. `error` is the largest relative error of the family's
# figure on one kind of text. Where a family has no measured vocabulary, a measured one of the
# same kind stands in and says so.
# Figures (prose / code / records -> mean): Llama 3 3.74 / 4.03 / 4.39 -> 4.05; Llama 2
# 3.16 / 3.09 / 3.60 -> 3.28 (its converted vocabulary gave llama.cpp's ids on 32 of its 47 test
# strings, every other family on 46-47); Qwen2 3.68 / 4.00 / 4.38 -> 4.02; GPT-2
# 3.28 / 2.58 / 3.98 -> 3.28; Phi-3 3.16 / 3.09 / 3.87 -> 3.37.
LLAMA3 = Approximation(4.05, 0.08, "Llama 3's tokenizer measured at 4.05 characters per token")
LLAMA2 = Approximation(3.28, 0.10, "Llama 2's tokenizer measured at 3.28 characters per token")
QWEN2 = Approximation(4.02, 0.09, "Qwen2's tokenizer measured at 4.02 characters per token")
GPT2 = Approximation(3.28, 0.21, "GPT-2's tokenizer measured at 3.28 characters per token")
PHI3 = Approximation(3.37, 0.15, "Phi-3's tokenizer measured at 3.37 characters per token")
# Without a family: the rule of thumb, off by as much as every measured family and kind of text
# lies from it (GPT-2 on code: 2.58 characters per token, 36% more tokens than characters / 4).
GENERIC = Approximation(CHARS_PER_TOKEN, 0.36, "OpenAI's ~4 characters per token for English")
APPROXIMATION_NOTE = (
    f"no local tokenizer was given: tokens = ceil(characters / {CHARS_PER_TOKEN:g}) per example "
    f"(OpenAI's ~4 characters per token guidance for English; real tokenizers lie up to "
    f"{GENERIC.error:.0%} from it); pass model_path for exact counts, or model for its family's"
)
# Texts handed to a fast tokenizer at once: large enough to use its batching, small enough
# that a batch of long examples stays a few MB.
TOKENIZE_BATCH = 256


def approximate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """Tokens of `text` by the characters-per-token rule (at least 1)."""
    return max(1, math.ceil(len(text) / chars_per_token))


def family_approximation(config: Mapping[str, Any]) -> tuple[Approximation, str | None]:
    """The measured approximation of a model's tokenizer family, from its config.json; with
    what stands in for it when its own family was not measured (None: measured itself)."""
    kind, vocab = config.get("model_type"), int(config.get("vocab_size") or 0)
    if kind == "llama":
        return (LLAMA3, None) if vocab >= 128_000 else (LLAMA2, None)
    if kind in ("mistral", "mixtral"):
        return LLAMA2, "Mistral's 32k SentencePiece vocabulary is approximated by Llama 2's"
    if kind in ("qwen2", "qwen2_moe"):
        return QWEN2, None
    if kind == "gpt2":
        return GPT2, None
    if kind == "gpt_neox":
        return GPT2, "GPT-NeoX's 50k BPE is approximated by GPT-2's"
    if kind == "phi3":
        return PHI3, None
    return GENERIC, f"no measured tokenizer of the {kind} family"


@lru_cache(maxsize=8)
def load_tokenizer(folder: str) -> Any:
    """The tokenizer saved in a local model folder (never downloaded, never remote code)."""
    from transformers import AutoTokenizer  # heavy: loaded when a tokenizer is first needed

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise InvalidInput(
            f"model_path has no tokenizer that transformers can load: {exc}", field="model_path"
        ) from None


@dataclass(frozen=True, slots=True)
class Measure:
    """One example as the worker will train on it: its tokens (special tokens included), the
    first position whose label is learned (None: none is) and its length with the EOS the
    worker appends."""

    tokens: int
    first_loss: int | None
    length: int


class TokenCounter:
    """Counts tokens for batches of examples; `name` says which tokenizer did it, `chat` renders
    conversations with that tokenizer's chat template (None: the plain delimiters)."""

    def __init__(
        self,
        name: str,
        measure_batch: Callable[[Sequence[Example]], list[Measure]],
        *,
        chat: ChatRenderer | None = None,
        error: float = 0.0,
        note: str | None = None,
    ) -> None:
        self.name = name
        self.chat = chat
        self.error = error  # relative: 0 for the model's own tokenizer
        self.note = note
        self._measure_batch = measure_batch

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, special tokens the tokenizer adds (BOS, ...) included."""
        return [m.tokens for m in self.measure([Example(RecordFormat.TEXT, t) for t in texts])]

    def measure(self, examples: Sequence[Example]) -> list[Measure]:
        """Per example: its tokens (as `count`), where its loss starts and its trained length."""
        return self._measure_batch(examples) if examples else []

    @property
    def is_approximate(self) -> bool:
        """Whether the counts come from the characters-per-token rule."""
        return self.name == APPROXIMATE


def approximate_counter(
    approximation: Approximation = GENERIC, *, model: str | None = None, stand_in: str | None = None
) -> TokenCounter:
    """Counts by characters per token, used when the model's tokenizer is not on the machine;
    its note says which rule, measured how, and how far off it may be."""
    ratio = approximation.chars_per_token

    def _measure(examples: Sequence[Example]) -> list[Measure]:
        out: list[Measure] = []
        for example in examples:
            n = approximate_tokens(example.text, ratio)
            prompt = approximate_tokens(example.prompt, ratio) if masks_prompt(example) else 0
            first = first_loss(prompt_tokens=prompt, n_tokens=n, appends_eos=True)
            out.append(Measure(n, first, n + 1))
        return out

    if model is None:
        note = APPROXIMATION_NOTE
    else:
        note = (
            f"the tokenizer of {model} is not on this machine: tokens = ceil(characters / "
            f"{ratio:g}) per example ({approximation.basis}"
            + (f"; {stand_in}" if stand_in else "")
            + f"), within about {approximation.error:.0%}; pass model_path for exact counts"
        )
    return TokenCounter(APPROXIMATE, _measure, error=approximation.error, note=note)


def tokenizer_counter(folder: Path, *, label: str) -> TokenCounter:
    """A counter using the tokenizer saved in `folder` (already confined to the model roots)."""
    return _counter(load_tokenizer(str(folder)), label=label)


def _counter(tokenizer: Any, *, label: str) -> TokenCounter:
    eos = tokenizer.eos_token_id

    def _measure(examples: Sequence[Example]) -> list[Measure]:
        out: list[Measure] = []
        for enc in encode(examples, tokenizer):
            plus = appends_eos(enc.ids, eos)
            n = len(enc.ids)
            first = first_loss(prompt_tokens=enc.prompt_tokens, n_tokens=n, appends_eos=plus)
            out.append(Measure(n, first, n + int(plus)))
        return out

    return TokenCounter(label, _measure, chat=chat_renderer(tokenizer))


def cached_tokenizer_counter(hub_id: str) -> TokenCounter | None:
    """A counter with the tokenizer of `hub_id` if this machine's hub cache holds it (nothing is
    downloaded), else None."""
    try:
        tokenizer = _cached_tokenizer(hub_id)
    except OSError:  # not in the cache (transformers' word for a file it may not fetch)
        return None
    return _counter(tokenizer, label=hub_id)


@lru_cache(maxsize=8)
def _cached_tokenizer(hub_id: str) -> Any:
    from transformers import AutoTokenizer  # heavy: loaded when a tokenizer is first needed

    return AutoTokenizer.from_pretrained(hub_id, local_files_only=True, trust_remote_code=False)


def chat_renderer(tokenizer: Any) -> ChatRenderer | None:
    """Conversations rendered by the tokenizer's own chat template; None if it has none.

    The text is the template applied to the whole conversation; the prompt is the template
    applied to the turns before the last reply with the generation prompt (the header a reply
    follows). A template whose prompt is not where its full text starts (some rewrite earlier
    turns once a reply follows) cannot mark the prompt, and that example falls back to the
    plain delimiters (`formats.render_chat_plain`).
    """
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: Sequence[Message]) -> tuple[str, int] | None:
        turns = [{"role": role, "content": content} for role, content in messages]
        try:
            text = tokenizer.apply_chat_template(turns, tokenize=False)
            reply = last_reply(messages)
            if reply is None:
                return str(text), 0
            prompt = tokenizer.apply_chat_template(
                turns[:reply], tokenize=False, add_generation_prompt=True
            )
        except TemplateError:  # e.g. a template that refuses a system turn or two user turns
            return None
        if not isinstance(text, str) or not isinstance(prompt, str) or not text.startswith(prompt):
            return None
        return text, len(prompt)

    return render


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
    """Per-example measures folded in as they come: memory grows with the distinct counts
    seen, not with the examples (a dataset's rows are streamed, never all kept)."""

    def __init__(self) -> None:
        self.tokens: Counter[int] = Counter()
        self._firsts: Counter[tuple[int | None, int]] = Counter()

    def add(self, measured: Sequence[Measure]) -> None:
        """Fold in one batch of measures."""
        for m in measured:
            self.tokens[m.tokens] += 1
            self._firsts[(m.first_loss, m.length)] += 1

    @property
    def examples(self) -> int:
        """How many examples were folded in."""
        return self.tokens.total()

    def stats(self) -> TokenStats:
        """The distribution of tokens per example (at least one example must be in)."""
        return summarize_counts(self.tokens)

    def histogram(self) -> dict[str, Any]:
        """The stats entries of `loss_tokens.histogram`: minimum seq_len and trained length."""
        return loss_tokens.histogram_of_counts(self._firsts)


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
