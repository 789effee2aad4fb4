"""A tiny model and dataset shared by the training tests (built once per session, offline)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from worker.training.spec import Launch, parse_launch


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide Llama with a 256-token BPE tokenizer."""
    return make_tiny_model(
        tmp_path_factory.mktemp("model") / "tiny", vocab_size=256, hidden_size=32, heads=4
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 Alpaca records (prompt and response, so prompt masking is exercised)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "alpaca.jsonl", n=64)


@pytest.fixture
def job_spec(tiny_model: Path) -> dict[str, Any]:
    """A short job on the tiny model (a `JobSpec` as JSON): 3 optimizer steps of 4 sequences."""
    return {
        "method": "lora",
        "model": {"path": str(tiny_model)},
        "training": {"micro_batch_size": 4, "precision": "fp32"},
        "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"},
        "max_steps": 3,
        "price_per_gpu_hour": 2.0,
        "flops_per_token": 1.0e6,
        "eval_fraction": 0.1,
        "learning_rate": 1e-3,
    }


@pytest.fixture
def launch(tiny_dataset: Path) -> Callable[..., Launch]:
    """`launch(spec, **run)`: the launch of a spec dict on the CPU with the tiny dataset."""

    def make(spec: dict[str, Any], **run: Any) -> Launch:
        context = {"job_id": "test", "dataset_path": str(tiny_dataset), "device": "cpu", **run}
        return parse_launch({"spec": spec, "run": context})

    return make
