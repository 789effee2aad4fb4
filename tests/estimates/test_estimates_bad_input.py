"""Every bad input of issue 4 gets a 4xx problem+json naming what is wrong; never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.estimator import engine, model_analysis
from tests.conftest import auth

PROBLEM = "application/problem+json"
BASE = {
    "model": "meta-llama/Llama-3.2-1B",
    "dataset": {"num_examples": 1000, "avg_tokens": 200, "max_tokens": 512},
    "methods": ["lora"],
    "hardware": {"gpu": "A100-40GB"},
}
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
}


def _problem(client: TestClient, secret: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    r = client.post("/v1/estimates", json=body, headers=auth(secret))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["status"] == status and problem["detail"]
    result: dict[str, Any] = problem
    return result


def _locs(problem: dict[str, Any]) -> list[list[str]]:
    return [[p for p in e["loc"] if p != "body"] for e in problem.get("errors", [])]


def test_unknown_model_id_is_404_with_close_matches(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    problem = _problem(app_client, keys["read"], BASE | {"model": "meta-llama/Llama-2-7b"}, 404)
    assert "meta-llama/Llama-2-7b-hf" in problem["close_matches"]
    assert "meta-llama/Llama-2-7b-hf" in problem["detail"]
    problem = _problem(app_client, keys["read"], BASE | {"model": "mistral-7b-v0.1"}, 404)
    assert "mistralai/Mistral-7B-v0.1" in problem["close_matches"]
    problem = _problem(app_client, keys["read"], BASE | {"model": "zzzzqqqq"}, 404)
    assert problem["close_matches"] == []


def test_unknown_gpu_is_422_listing_valid_ids(app_client: TestClient, keys: dict[str, str]) -> None:
    problem = _problem(app_client, keys["read"], BASE | {"hardware": {"gpu": "A100-40G"}}, 422)
    assert "A100-40GB" in problem["valid"] and "H100-80GB-SXM" in problem["valid"]
    assert ["hardware", "gpu"] in _locs(problem)
    problem = _problem(app_client, keys["read"], BASE | {"available_gpus": {"TPUv9": 4}}, 422)
    assert ["available_gpus"] in _locs(problem) and "A100-40GB" in problem["valid"]
    problem = _problem(
        app_client, keys["read"], BASE | {"hardware": {"provider": "nowhere-cloud"}}, 422
    )
    assert ["hardware", "provider"] in _locs(problem) and "aws" in problem["valid"]


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"training": {"seq_len": 0}}, ["training", "seq_len"]),
        ({"training": {"micro_batch_size": -4}}, ["training", "micro_batch_size"]),
        ({"training": {"epochs": 0}}, ["training", "epochs"]),
        ({"lora": {"r": 0}}, ["lora", "r"]),
        ({"dataset": {"num_examples": 1e12, "avg_tokens": 100}}, ["dataset", "num_examples"]),
        ({"dataset": {"total_tokens": -5}}, ["dataset", "total_tokens"]),
        ({"dataset": {"avg_tokens": 100}}, ["dataset"]),
        (
            {"dataset": {"num_examples": 10, "avg_tokens": 100, "min_tokens": 0}},
            ["dataset", "min_tokens"],
        ),
        ({"dataset": {"num_examples": 10, "avg_tokens": 100, "min_tokens": 101}}, ["dataset"]),
        ({"hardware": {"num_gpus": 0}}, ["hardware", "num_gpus"]),
        ({"methods": []}, ["methods"]),
        ({"methods": ["lora", "lora"]}, ["methods"]),
        ({"methods": ["dpo"]}, ["methods", "0"]),
        ({"variants": 0}, ["variants"]),
        ({"budget_usd": -1}, ["budget_usd"]),
        ({"domain_shift": "extreme"}, ["domain_shift"]),
        ({"storage_months": 1e6}, ["storage_months"]),
        ({"lora": {"r": 8, "target_modules": ["qkv_proj"]}}, ["lora", "target_modules"]),
        ({"unexpected": 1}, ["unexpected"]),
    ],
)
def test_absurd_numbers_are_422_naming_the_field(
    app_client: TestClient, keys: dict[str, str], patch: dict[str, Any], loc: list[str]
) -> None:
    problem = _problem(app_client, keys["read"], BASE | patch, 422)
    assert loc in _locs(problem), problem


@pytest.mark.parametrize(
    ("config", "model_type", "fragment"),
    [
        ({"model_type": "not-a-model", "hidden_size": 8}, "not-a-model", "cannot build"),
        (TINY_LLAMA | {"hidden_size": 100, "num_attention_heads": 3}, "llama", "cannot build"),
        ({"model_type": "gpt2", "n_embd": 10, "n_head": 3}, "gpt2", "cannot build"),
        (TINY_LLAMA | {"rope_scaling": {"rope_type": "bogus"}}, "llama", "cannot build"),
        (TINY_LLAMA | {"vocab_size": 10**12}, "llama", "parameter and buffer elements"),
        (TINY_LLAMA | {"num_hidden_layers": 10**7}, "llama", "num_hidden_layers"),
        (TINY_LLAMA | {"hidden_size": "big"}, "llama", "cannot build"),
        (TINY_LLAMA | {"auto_map": {"AutoModelForCausalLM": "evil.Model"}}, "llama", "remote"),
        (
            {"model_type": "gpt2", "n_embd": 64, "n_head": 0, "n_layer": 0},
            "gpt2",
            "attention heads",
        ),
    ],
)
def test_configs_transformers_cannot_build_are_422_naming_model_type(
    app_client: TestClient,
    keys: dict[str, str],
    config: dict[str, Any],
    model_type: str,
    fragment: str,
) -> None:
    problem = _problem(app_client, keys["read"], BASE | {"model": {"config": config}}, 422)
    assert problem["model_type"] == model_type
    assert fragment in problem["detail"]
    assert len(problem["detail"]) < 1000
    assert any(loc[:2] == ["model", "config"] for loc in _locs(problem))


def test_a_config_without_model_type_and_malformed_model_refs(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    problem = _problem(app_client, keys["read"], BASE | {"model": {"config": {"x": 1}}}, 422)
    assert "model_type" in problem["detail"]
    for model in (5, {"config": "llama"}, {"path": 3}, {"nothing": 1}, ""):
        _problem(app_client, keys["read"], BASE | {"model": model}, 422)


def test_a_valid_inline_config_is_estimated(app_client: TestClient, keys: dict[str, str]) -> None:
    r = app_client.post(
        "/v1/estimates",
        json=BASE | {"model": {"config": TINY_LLAMA}},
        headers=auth(keys["read"]),
    )
    assert r.status_code == 201, r.text
    assert r.json()["model"]["hidden_size"] == 64
    assert r.json()["model_ref"].startswith("config:llama:")


@pytest.mark.parametrize(
    ("patch", "loc", "fragment"),
    [
        ({"available_gpus": {"A100-40GB": 0}}, ["available_gpus"], "at least 1"),
        (
            {
                "model": {"config": TINY_LLAMA | {"num_hidden_layers": 0}},
                "lora": {"target_modules": "all-linear"},
            },
            ["lora"],
            "peft cannot apply",
        ),
    ],
)
def test_input_errors_the_estimator_detects_are_422_naming_the_field(
    app_client: TestClient,
    keys: dict[str, str],
    patch: dict[str, Any],
    loc: list[str],
    fragment: str,
) -> None:
    problem = _problem(app_client, keys["read"], BASE | patch, 422)
    assert loc in _locs(problem) and fragment in problem["detail"]


BUGS = [KeyError("layer"), ValueError("bad sum"), TypeError("None"), ZeroDivisionError("heads")]
INTERNALS = ["engine._estimate", "model_analysis._analyse"]


@pytest.mark.parametrize("where", INTERNALS)
@pytest.mark.parametrize("bug", BUGS, ids=[type(b).__name__ for b in BUGS])
def test_an_estimator_bug_is_a_500_problem_not_a_client_error(
    app_client: TestClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    bug: Exception,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise bug

    module, name = where.split(".")
    monkeypatch.setattr({"engine": engine, "model_analysis": model_analysis}[module], name, broken)
    engine.clear_cache()
    # A config no request asked about before, so that no cached analysis, no cached estimate and
    # no stored estimate of the same content (app/estimates/reuse.py) answers instead.
    config = TINY_LLAMA | {"vocab_size": 1000 + 10 * INTERNALS.index(where) + BUGS.index(bug)}
    config |= {"bug_probe": uuid.uuid4().hex}
    problem = _problem(app_client, keys["read"], BASE | {"model": {"config": config}}, 500)
    assert "errors" not in problem and str(bug) not in problem["detail"]
