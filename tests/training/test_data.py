"""Tokenizing, masking, packing, splitting and batching with the tiny model's real tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from app.datasets.formats import render_record
from app.estimator.workload import (
    GROUP_BY_LENGTH_MEGABATCH,
    expected_grouped_padding,
    expected_longest,
)
from worker.training.data import (
    IGNORE_INDEX,
    DataStats,
    TokenizedExample,
    collate,
    fit_to_length,
    iterate_batches,
    pack,
    prepare_data,
    split_holdout,
    tokenize_examples,
)
from worker.training.errors import DatasetError, JobSpecError


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_prompt_tokens_are_masked_and_eos_appended(tokenizer: Any) -> None:
    ex = render_record({"prompt": "Question: what is seven times six?", "completion": " forty two"})
    [masked] = tokenize_examples([ex], tokenizer, mask_prompt=True)
    [plain] = tokenize_examples([ex], tokenizer, mask_prompt=False)
    assert masked.input_ids == plain.input_ids
    assert masked.input_ids[0] == tokenizer.bos_token_id
    assert (
        masked.input_ids[-1] == tokenizer.eos_token_id
        and masked.labels[-1] == tokenizer.eos_token_id
    )
    assert plain.labels == plain.input_ids
    learned = [
        t for t, label in zip(masked.input_ids, masked.labels, strict=True) if label != IGNORE_INDEX
    ]
    # Exactly the completion (and EOS) is learned: decoding it gives the completion back.
    assert tokenizer.decode(learned, skip_special_tokens=True) == " forty two"
    n_prompt = masked.labels.index(next(x for x in masked.labels if x != IGNORE_INDEX))
    assert all(label == IGNORE_INDEX for label in masked.labels[:n_prompt])


def test_text_records_are_never_masked(tokenizer: Any) -> None:
    [t] = tokenize_examples(
        [render_record({"text": "The river bends."})], tokenizer, mask_prompt=True
    )
    assert t.labels == t.input_ids


def test_fit_to_length_truncates_and_drops_examples_with_nothing_to_learn() -> None:
    stats = DataStats()
    keep = TokenizedExample([1, 5, 6, 7, 2], [1, 5, 6, 7, 2])
    prompt_only = TokenizedExample([1, 5, 6, 7, 2], [IGNORE_INDEX] * 3 + [7, 2])
    out = fit_to_length([keep, prompt_only], 3, stats)
    assert out == [TokenizedExample([1, 5, 6], [1, 5, 6])]
    assert stats.truncated == 2 and stats.dropped_no_loss_tokens == 1


def test_pack_keeps_every_token_in_order() -> None:
    items = [
        TokenizedExample(list(range(i * 10, i * 10 + n)), list(range(i * 10, i * 10 + n)))
        for i, n in enumerate([3, 7, 5])
    ]
    blocks = pack(items, 4)
    assert [len(b.input_ids) for b in blocks] == [4, 4, 4, 3]
    assert [t for b in blocks for t in b.input_ids] == [t for x in items for t in x.input_ids]


def test_split_holdout_is_by_content_and_disjoint() -> None:
    items = [TokenizedExample([i, i], [i, i]) for i in range(40)]
    contents = [f"example {i}" for i in range(40)]
    train, held = split_holdout(items, contents, fraction=0.1)
    # The same contents in another order hold out the same examples.
    order = list(reversed(range(40)))
    _, held_reordered = split_holdout(
        [items[i] for i in order], [contents[i] for i in order], fraction=0.1
    )
    assert sorted(x.input_ids[0] for x in held) == sorted(x.input_ids[0] for x in held_reordered)
    assert len(held) == 4 and len(train) == 36
    assert {x.input_ids[0] for x in train}.isdisjoint({x.input_ids[0] for x in held})
    assert split_holdout(items[:1], contents[:1], fraction=0.5) == (items[:1], [])
    assert split_holdout(items, contents, fraction=0.0) == (items, [])


def test_collate_pads_to_the_longest_item_by_default() -> None:
    items = [TokenizedExample([1, 4, 5], [IGNORE_INDEX, 4, 5]), TokenizedExample([1, 6], [1, 6])]
    batch = collate(items, seq_len=4, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 4, 5], [1, 6, 0]]
    assert (batch.real_tokens, batch.processed_tokens, batch.loss_tokens) == (5, 6, 3)


def test_length_grouping_cuts_padding_and_keeps_every_item() -> None:
    gen = random.Random(0)
    lengths = [1 + int(gen.expovariate(1 / 60)) for _ in range(2000)]  # exponential, mean ~60
    items = [TokenizedExample([1] * n, [1] * n) for n in lengths]

    def one_epoch(group: bool) -> list[Any]:
        it = iterate_batches(
            items, micro_batch_size=4, seq_len=1000, pad_id=0, seed=3, group_by_length=group
        )
        return [next(it) for _ in range(500)]

    plain, grouped = one_epoch(False), one_epoch(True)
    assert sum(b.real_tokens for b in grouped) == sum(len(x.input_ids) for x in items)
    assert sum(b.real_tokens for b in plain) == sum(b.real_tokens for b in grouped)
    padded = sum(b.processed_tokens for b in grouped)
    assert padded < 0.8 * sum(b.processed_tokens for b in plain)
    # The estimator's model of grouped padding (exponential lengths, as these are) is within
    # 15% of what the worker pads.
    mean = sum(len(x.input_ids) for x in items) / len(items)
    modelled = expected_grouped_padding(mean, 4, GROUP_BY_LENGTH_MEGABATCH)
    assert padded / len(items) == pytest.approx(modelled, rel=0.15)


def test_random_micro_batches_of_templated_examples_pad_as_modelled() -> None:
    # Every example carries a 40-token prompt template, the rest varies (exponential, mean 60):
    # the worker pads a micro-batch to its longest, which the estimator models from the mean
    # and the shortest example; from the mean alone it would count far more padding.
    gen = random.Random(1)
    lengths = [40 + int(gen.expovariate(1 / 60)) for _ in range(4000)]
    items = [TokenizedExample([1] * n, [1] * n) for n in lengths]
    mean, shortest = sum(lengths) / len(lengths), min(lengths)
    for micro_batch in (2, 4):
        it = iterate_batches(items, micro_batch_size=micro_batch, seq_len=2000, pad_id=0, seed=5)
        batches = [next(it) for _ in range(len(items) // micro_batch)]
        padded = sum(b.processed_tokens for b in batches) / (len(batches) * micro_batch)
        assert padded == pytest.approx(expected_longest(mean, micro_batch, shortest), rel=0.05)
        assert expected_longest(mean, micro_batch) > 1.15 * padded


def test_collate_pads_right_and_counts_tokens() -> None:
    batch = collate(
        [TokenizedExample([1, 4, 5], [IGNORE_INDEX, 4, 5]), TokenizedExample([1, 6], [1, 6])],
        seq_len=4,
        pad_id=0,
        padding="max_length",
    )
    assert batch.input_ids.tolist() == [[1, 4, 5, 0], [1, 6, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch.labels.tolist() == [
        [IGNORE_INDEX, 4, 5, IGNORE_INDEX],
        [1, 6, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert (batch.real_tokens, batch.processed_tokens, batch.loss_tokens) == (5, 8, 3)


def test_iterate_batches_reshuffles_each_epoch() -> None:
    items = [TokenizedExample([i, i], [i, i]) for i in range(8)]
    it = iterate_batches(items, micro_batch_size=8, seq_len=2, pad_id=0, seed=1)
    first, second = next(it), next(it)
    assert sorted(first.input_ids[:, 0].tolist()) == list(range(8))
    assert first.input_ids[:, 0].tolist() != second.input_ids[:, 0].tolist()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _prepare(path: Path, tokenizer: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "seq_len": None,
        "packing": False,
        "mask_prompt": True,
        "eval_fraction": 0.1,
        "model_max": 2048,
        "max_bytes": 10_000_000,
    }
    return prepare_data(path, tokenizer, **{**args, **kw})


def test_prepare_data_defaults_to_the_longest_example(tiny_dataset: Path, tokenizer: Any) -> None:
    data = _prepare(tiny_dataset, tokenizer)
    longest = max(len(x.input_ids) for x in data.train + data.eval)
    assert data.seq_len == longest and data.stats.truncated == 0
    assert data.stats.examples == 64 and data.stats.format == "alpaca"
    assert (data.stats.train_examples, data.stats.eval_examples) == (58, 6)
    # Unmasked, packing keeps every training token; masked, blocks of pure prompt are dropped.
    packed = _prepare(tiny_dataset, tokenizer, packing=True, seq_len=128, mask_prompt=False)
    assert all(len(x.input_ids) <= 128 for x in packed.train)
    assert sum(len(x.input_ids) for x in packed.train) == sum(len(x.input_ids) for x in data.train)
    masked = _prepare(tiny_dataset, tokenizer, packing=True, seq_len=128)
    assert len(masked.train) <= len(packed.train)
    assert all(any(t != IGNORE_INDEX for t in x.labels[1:]) for x in masked.train)


def test_prepare_data_skips_bad_lines_and_reports_them(tmp_path: Path, tokenizer: Any) -> None:
    path = _write(
        tmp_path / "d.jsonl",
        [json.dumps({"text": "The river bends."}), "{oops", json.dumps({"x": 1})],
    )
    data = _prepare(path, tokenizer, eval_fraction=0.0)
    assert data.stats.examples == 1 and data.stats.bad_lines == 2
    assert [b["line"] for b in data.stats.first_bad_lines] == [2, 3]


def test_prepare_data_errors(tmp_path: Path, tokenizer: Any) -> None:
    with pytest.raises(DatasetError, match="not found"):
        _prepare(tmp_path / "missing.jsonl", tokenizer)
    bad = _write(tmp_path / "bad.jsonl", ["{oops", json.dumps({"text": ""})])
    with pytest.raises(DatasetError, match="line 1"):
        _prepare(bad, tokenizer)
    good = _write(tmp_path / "good.jsonl", [json.dumps({"text": "The river bends."})])
    with pytest.raises(JobSpecError, match="maximum length"):
        _prepare(good, tokenizer, seq_len=4096)
    with pytest.raises(DatasetError, match="exceeds the limit"):
        _prepare(good, tokenizer, max_bytes=5)
    long_prompt = _write(
        tmp_path / "p.jsonl", [json.dumps({"prompt": "word " * 50, "completion": "end"})]
    )
    with pytest.raises(DatasetError, match="no training sequence"):
        _prepare(long_prompt, tokenizer, seq_len=8, eval_fraction=0.0)


def test_fractions_share_the_eval_set_and_nest_their_training_examples(
    tiny_dataset: Path, tokenizer: Any
) -> None:
    whole = _prepare(tiny_dataset, tokenizer)
    runs = {f: _prepare(tiny_dataset, tokenizer, data_fraction=f) for f in (0.1, 0.25, 0.5)}
    key = {f: {tuple(x.input_ids) for x in run.train} for f, run in runs.items()}
    assert [len(key[f]) <= len(runs[f].train) for f in runs] == [True] * 3
    assert [runs[f].stats.train_examples for f in (0.1, 0.25, 0.5)] == [6, 15, 29]  # of 58
    assert key[0.1] <= key[0.25] <= key[0.5] <= {tuple(x.input_ids) for x in whole.train}
    # Every fraction is scored on the whole dataset's held-out items, with the same seq_len.
    ids = {run.stats.eval_set_id for run in runs.values()}
    assert ids == {whole.stats.eval_set_id} and whole.stats.eval_set_id is not None
    assert all(run.eval == whole.eval and run.seq_len == whole.seq_len for run in runs.values())
    other = _prepare(tiny_dataset, tokenizer, eval_fraction=0.2)
    assert other.stats.eval_set_id != whole.stats.eval_set_id
