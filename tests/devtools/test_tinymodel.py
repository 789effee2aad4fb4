"""The tiny offline model and dataset used by the demo and the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.datasets.formats import RecordFormat
from app.datasets.reader import DatasetReader
from devtools.tinymodel import make_tiny_dataset, make_tiny_model, save_tokenizer

SENTENCE = "The harbour town wakes before the sun."


def test_make_tiny_model_loads_back_and_runs(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = make_tiny_model(tmp_path / "tiny", hidden_size=32, heads=4, kv_heads=2)
    assert (dest / "model.safetensors").is_file() and (dest / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest)
    assert model.config.model_type == "llama" and model.config.hidden_size == 32
    assert model.config.vocab_size == len(tok) <= 512
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    ids = tok(SENTENCE).input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == SENTENCE
    # Without learned merges a byte-level BPE gives one token per byte.
    assert len(ids) < 0.6 * len(SENTENCE)
    out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
    assert torch.isfinite(out.loss)


def test_save_tokenizer_alone_loads_back(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    returned = save_tokenizer(tmp_path / "tok", vocab_size=300)
    assert not (tmp_path / "tok" / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tok) == len(returned) <= 300
    ids = tok(SENTENCE).input_ids
    assert ids == returned(SENTENCE).input_ids and ids[0] == tok.bos_token_id


def test_make_tiny_model_same_seed_same_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = load_file(make_tiny_model(tmp_path / "a", hidden_size=32, seed=3) / "model.safetensors")
    b = load_file(make_tiny_model(tmp_path / "b", hidden_size=32, seed=3) / "model.safetensors")
    c = load_file(make_tiny_model(tmp_path / "c", hidden_size=32, seed=4) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_make_tiny_model_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_tiny_model(tmp_path / "bad", hidden_size=30, heads=4)


@pytest.mark.parametrize("fmt", list(RecordFormat))
@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_make_tiny_dataset_reads_back(tmp_path: Path, fmt: RecordFormat, name: str) -> None:
    path = make_tiny_dataset(tmp_path / name, n=25, fmt=fmt)
    reader = DatasetReader(path, max_bytes=1_000_000)
    assert len(list(reader)) == 25
    assert reader.format is fmt and reader.bad_count == 0
    assert reader.compressed == name.endswith(".gz")
