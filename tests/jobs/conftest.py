"""Fixtures for the jobs tests: a tiny model under the model root and an uploaded tiny dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth
from tests.support import ServiceEnv

TINY_NAME = "tiny-llama"
# Tiny on purpose: 2 layers of width 64 train a step in milliseconds on a CPU core.
TRAINING = {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32", "optimizer": "adamw"}


@pytest.fixture(scope="session")
def tiny_model(service_env: ServiceEnv) -> Path:
    """A tiny Llama with a trained tokenizer, written under the model root."""
    dest = service_env.model_root / TINY_NAME
    if not (dest / "config.json").exists():
        make_tiny_model(dest, vocab_size=384, hidden_size=64, layers=2, heads=4, kv_heads=2)
    return dest


@pytest.fixture(scope="session")
def dataset_id(
    app_client: Any,
    keys: dict[str, str],
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A 120-example text dataset uploaded through the API, counted with the tiny tokenizer."""
    path = make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.jsonl", n=120, fmt="text")
    with path.open("rb") as fh:
        resp = app_client.post(
            "/v1/datasets",
            files={"file": ("tiny.jsonl", fh, "application/x-ndjson")},
            data={"name": "tiny", "model_path": TINY_NAME},
            headers=auth(keys["submit"]),
        )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


@pytest.fixture(scope="session")
def job_body(dataset_id: str) -> Callable[..., dict[str, Any]]:
    """A job request body for the tiny model on the `cpu` GPU entry, with overrides."""

    def make(method: str = "lora", **over: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "method": method,
            "model": {"path": TINY_NAME},
            "dataset_id": dataset_id,
            "training": dict(TRAINING),
            "hardware": {"gpu": "cpu", "provider": "aws"},
            "max_steps": 6,
            "tags": {"project": "tests"},
        }
        if method == "qlora":
            body["lora"] = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
        body.update(over)
        return body

    return make
