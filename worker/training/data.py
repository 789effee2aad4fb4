"""From a JSONL file to padded or packed micro-batches, with a held-out split for eval loss.

Records are rendered by `app.datasets.formats`; prompt tokens can be kept out of the loss. The
held-out eval set and the subset a run on a fraction of the data trains on are chosen by content
(`app.evals.holdout`), so every job on a dataset is scored on the same items. Without
packing every micro-batch is padded to its longest example (`padding="longest"`, the default) or
to `seq_len` (`"max_length"`), optionally with examples of similar length batched together
(`group_by_length`); padded positions count in "processed tokens" as the estimator counts them.
With packing, examples are concatenated and cut into `seq_len` blocks, attending across example
boundaries (plain packing, no per-example attention masks).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.datasets.encode import appends_eos, encode, masks_prompt
from app.datasets.formats import Example
from app.datasets.reader import CorruptStream, DatasetReader, DatasetTooLarge
from app.datasets.tokens import chat_renderer
from app.estimator.spec import Padding
from app.estimator.workload import GROUP_BY_LENGTH_MEGABATCH
from app.evals import holdout
from worker.training.errors import DatasetError, JobSpecError

IGNORE_INDEX = -100  # label value torch's cross_entropy skips (its ignore_index default)
TOKENIZE_CHUNK = 1024  # texts per fast-tokenizer call: batched for speed, bounded for memory


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and per-token labels (IGNORE_INDEX where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Batch:
    """One micro-batch on the CPU, with its token counts."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    real_tokens: int  # non-pad tokens
    processed_tokens: int  # every position, padding included
    loss_tokens: int  # positions that contribute to the loss (after the causal shift)


@dataclass
class DataStats:
    """What happened to the dataset on its way to batches."""

    examples: int = 0
    bad_lines: int = 0
    format: str | None = None
    truncated: int = 0
    dropped_no_loss_tokens: int = 0
    loss_tokens: int = 0  # labels learned from in the train and eval sequences (no packing)
    chat_template: dict[str, int] | None = None  # conversations by the model's template / plain
    train_examples: int = 0  # of the fraction trained on
    eval_examples: int = 0
    data_fraction: float = 1.0
    train_examples_all: int = 0  # before taking the fraction
    eval_set_id: str | None = None
    seq_len: int = 0
    packing: bool = False
    train_sequences: int = 0
    eval_sequences: int = 0
    first_bad_lines: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PreparedData:
    """Train and eval sequences (each at most `seq_len` tokens) and how they were made."""

    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    seq_len: int
    stats: DataStats


def read_examples(
    path: Path,
    *,
    max_bytes: int,
    stats: DataStats,
    tokenizer: Any = None,
    columns: dict[str, str] | None = None,
) -> list[Example]:
    """Every good example in the file, read as the upload read it (`DatasetReader`, the same
    columns, conversations by `tokenizer`'s chat template); bad rows are skipped and counted."""
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    chat = chat_renderer(tokenizer) if tokenizer is not None else None
    reader = DatasetReader(path, max_bytes=max_bytes, columns=columns, chat=chat)
    try:
        examples = [example for _, example in reader]
    except DatasetTooLarge as exc:
        raise DatasetError(str(exc)) from exc
    except CorruptStream as exc:
        raise DatasetError(f"{path.name}: {exc}") from exc
    stats.examples = len(examples)
    stats.bad_lines = reader.bad_count
    stats.format = str(reader.format) if reader.format else None
    if reader.templated or reader.plain_chats:
        stats.chat_template = {"model_template": reader.templated, "plain": reader.plain_chats}
    stats.first_bad_lines = [
        {"line": b.line, "reason": str(b.reason), "detail": b.detail} for b in reader.bad_lines
    ]
    if not examples:
        shown = "; ".join(f"line {b.line}: {b.detail}" for b in reader.bad_lines[:3])
        raise DatasetError(f"no usable examples in {path.name}" + (f" ({shown})" if shown else ""))
    return examples


def tokenize_examples(
    examples: Sequence[Example], tokenizer: Any, *, mask_prompt: bool
) -> list[TokenizedExample]:
    """Token ids with EOS appended; prompt tokens get IGNORE_INDEX labels when `mask_prompt`."""
    out: list[TokenizedExample] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[start : start + TOKENIZE_CHUNK]
        for example, enc in zip(chunk, encode(chunk, tokenizer), strict=True):
            ids = list(enc.ids)
            labels = list(ids)
            if mask_prompt and masks_prompt(example):
                labels[: enc.prompt_tokens] = [IGNORE_INDEX] * enc.prompt_tokens
            if appends_eos(ids, eos):
                ids.append(eos)
                labels.append(eos)
            out.append(TokenizedExample(ids, labels))
    return out


def split_holdout(
    items: list[TokenizedExample], contents: Sequence[str], *, fraction: float
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """(train, eval): the eval set is chosen by each example's content (app/evals/holdout.py);
    empty for fraction 0 or under two items."""
    train, held = holdout.split_indexes(contents, fraction=fraction)
    return [items[i] for i in train], [items[i] for i in held]


def choose_seq_len(items: Sequence[TokenizedExample], requested: int | None, model_max: int) -> int:
    """`requested`, or the longest example, never beyond what the model's positions allow."""
    if requested is not None:
        if requested > model_max:
            raise JobSpecError(
                f"training.seq_len {requested} exceeds the model's maximum length {model_max}"
            )
        return requested
    return max(1, min(max(len(x.input_ids) for x in items), model_max))


def _has_loss(labels: Sequence[int]) -> bool:
    return _loss_count(labels) > 0


def _loss_count(labels: Sequence[int]) -> int:
    # Position 0 is never a target after the causal shift.
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


def fit_to_length(
    items: Sequence[TokenizedExample], seq_len: int, stats: DataStats
) -> list[TokenizedExample]:
    """Truncate to `seq_len`; drop examples left with no token to learn from."""
    out: list[TokenizedExample] = []
    for x in items:
        if len(x.input_ids) > seq_len:
            stats.truncated += 1
            x = TokenizedExample(x.input_ids[:seq_len], x.labels[:seq_len])
        kept = _loss_count(x.labels)
        if kept:
            stats.loss_tokens += kept
            out.append(x)
        else:
            stats.dropped_no_loss_tokens += 1
    return out


def pack(items: Sequence[TokenizedExample], seq_len: int) -> list[TokenizedExample]:
    """Concatenate the examples and cut the stream into `seq_len` blocks (last one may be short)."""
    ids = [t for x in items for t in x.input_ids]
    labels = [t for x in items for t in x.labels]
    blocks = [
        TokenizedExample(ids[i : i + seq_len], labels[i : i + seq_len])
        for i in range(0, len(ids), seq_len)
    ]
    return [b for b in blocks if _has_loss(b.labels)]


def prepare_data(
    path: Path,
    tokenizer: Any,
    *,
    seq_len: int | None,
    packing: bool,
    mask_prompt: bool,
    eval_fraction: float,
    model_max: int,
    max_bytes: int,
    columns: dict[str, str] | None = None,
    data_fraction: float = 1.0,
) -> PreparedData:
    """Read, render, tokenize, split and fit the dataset to `seq_len` (packed or not).

    `data_fraction` < 1 trains on that share of the training examples (nested across fractions,
    app/evals/holdout.py); the eval set and `seq_len` stay those of the whole dataset.
    """
    stats = DataStats(packing=packing, data_fraction=data_fraction)
    examples = read_examples(
        path, max_bytes=max_bytes, stats=stats, tokenizer=tokenizer, columns=columns
    )
    tokenized = tokenize_examples(examples, tokenizer, mask_prompt=mask_prompt)
    contents = [e.text for e in examples]
    train_idx, held_idx = holdout.split_indexes(contents, fraction=eval_fraction)
    stats.train_examples_all = len(train_idx)
    if data_fraction < 1:
        keep = holdout.fraction_indexes([contents[i] for i in train_idx], fraction=data_fraction)
        train_idx = [train_idx[k] for k in keep]
    train = [tokenized[i] for i in train_idx]
    held = [tokenized[i] for i in held_idx]
    stats.train_examples, stats.eval_examples = len(train), len(held)
    length = choose_seq_len(tokenized, seq_len, model_max)
    if packing:
        train, held = pack(train, length), pack(held, length)
    else:
        train, held = fit_to_length(train, length, stats), fit_to_length(held, length, stats)
    if not train:
        raise DatasetError(
            "no training sequence has a token to learn from (prompts longer than seq_len?)"
        )
    stats.seq_len = length
    stats.train_sequences, stats.eval_sequences = len(train), len(held)
    stats.eval_set_id = holdout.eval_set_id((x.input_ids, x.labels) for x in held) if held else None
    return PreparedData(train, held, length, stats)


def collate(
    items: Sequence[TokenizedExample], *, seq_len: int, pad_id: int, padding: Padding = "longest"
) -> Batch:
    """Right-pad into tensors, to the longest item (`padding="longest"`) or to `seq_len`;
    padding gets attention 0 and IGNORE_INDEX labels."""
    n = len(items)
    if padding == "longest":
        seq_len = max(len(x.input_ids) for x in items)
    input_ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, seq_len), dtype=torch.long)
    real = 0
    for row, x in enumerate(items):
        k = len(x.input_ids)
        input_ids[row, :k] = torch.tensor(x.input_ids)
        labels[row, :k] = torch.tensor(x.labels)
        mask[row, :k] = 1
        real += k
    loss_tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return Batch(input_ids, mask, labels, real, n * seq_len, loss_tokens)


def micro_batches_per_epoch(n_items: int, micro_batch_size: int) -> int:
    """How many micro-batches one pass over `n_items` gives (the last one may be smaller)."""
    return math.ceil(n_items / micro_batch_size)


def length_grouped(
    order: Sequence[int], lengths: Sequence[int], *, micro_batch_size: int
) -> list[int]:
    """`order` regrouped so that each micro-batch holds examples of similar length.

    The shuffled order is cut into mega-batches of GROUP_BY_LENGTH_MEGABATCH micro-batches and
    each is sorted longest first: batches stay random across the epoch, padding inside a batch
    shrinks.
    """
    size = micro_batch_size * GROUP_BY_LENGTH_MEGABATCH
    out: list[int] = []
    for start in range(0, len(order), size):
        mega = order[start : start + size]
        out += sorted(mega, key=lambda i: -lengths[i])
    return out


def iterate_batches(
    items: Sequence[TokenizedExample],
    *,
    micro_batch_size: int,
    seq_len: int,
    pad_id: int,
    seed: int,
    shuffle: bool = True,
    padding: Padding = "longest",
    group_by_length: bool = False,
) -> Iterator[Batch]:
    """Endless micro-batches: a fresh seeded shuffle per epoch (length-grouped if asked)."""
    lengths = [len(x.input_ids) for x in items]
    epoch = 0
    while True:
        order = list(range(len(items)))
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        if group_by_length:
            order = length_grouped(order, lengths, micro_batch_size=micro_batch_size)
        for i in range(0, len(order), micro_batch_size):
            chunk = [items[j] for j in order[i : i + micro_batch_size]]
            yield collate(chunk, seq_len=seq_len, pad_id=pad_id, padding=padding)
        epoch += 1


def one_pass(
    items: Sequence[TokenizedExample],
    *,
    micro_batch_size: int,
    seq_len: int,
    pad_id: int,
    padding: Padding = "longest",
) -> list[Batch]:
    """Every item once, in order, as micro-batches (for evaluation)."""
    return [
        collate(items[i : i + micro_batch_size], seq_len=seq_len, pad_id=pad_id, padding=padding)
        for i in range(0, len(items), micro_batch_size)
    ]
