"""Every catalog model estimates with nothing but a token count, and says what LoRA adapts."""

from __future__ import annotations

from fastapi.testclient import TestClient
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_LORA

from app.catalog.model_catalog import catalog_model_ids, get_model_config
from tests.conftest import auth

METHODS = {"full", "lora", "qlora"}


def test_every_catalog_model_estimates_with_the_defaults(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    refused = {}
    for model_id in catalog_model_ids():
        body = {"model": model_id, "dataset": {"total_tokens": 1e7}}
        r = app_client.post("/v1/estimates", json=body, headers=auth(keys["read"]))
        if r.status_code != 201:
            refused[model_id] = r.text
            continue
        out = r.json()
        assert set(out["results"]) == METHODS, model_id
        model_type = get_model_config(model_id)["model_type"]
        peft_default = PEFT_LORA.get(model_type)
        if peft_default is None:  # peft has no default: the documented fallback, said in notes
            assert out["lora"] == {"target_modules": "all-linear", "source": "fallback"}
            assert any("peft has no default" in n for n in out["notes"]), model_id
        else:
            assert out["lora"]["source"] == "peft_default", model_id
            assert set(out["lora"]["target_modules"]) == set(peft_default), model_id
        assert all(out["results"][m]["trainable_params"] > 0 for m in METHODS)
    assert refused == {}


def test_encoder_decoder_estimates_say_the_worker_refuses_them(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    body = {"model": "google/flan-t5-base", "dataset": {"total_tokens": 1e6}, "methods": ["lora"]}
    out = app_client.post("/v1/estimates", json=body, headers=auth(keys["read"])).json()
    assert out["model"]["is_encoder_decoder"] is True
    assert out["lora"] == {"target_modules": ["q", "v"], "source": "peft_default"}
    assert any("encoder-decoder" in n and "refuses jobs" in n for n in out["notes"])


def test_named_targets_are_reported_as_requested(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    body = {
        "model": "openai-community/gpt2",
        "dataset": {"total_tokens": 1e6},
        "methods": ["lora"],
        "lora": {"target_modules": ["c_attn", "c_fc"]},
    }
    out = app_client.post("/v1/estimates", json=body, headers=auth(keys["read"])).json()
    assert out["lora"] == {"target_modules": ["c_attn", "c_fc"], "source": "requested"}
    assert not any(n.startswith("LoRA targets") for n in out["notes"])
    full_only = {**body, "methods": ["full"]}
    assert (
        app_client.post("/v1/estimates", json=full_only, headers=auth(keys["read"])).json()["lora"]
        is None
    )
