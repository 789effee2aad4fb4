"""GET /v1/catalog/models/{id}: default LoRA targets, MoE quantization, worker support."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_LORA

from tests.conftest import auth


def _detail(app_client: TestClient, keys: dict[str, str], model_id: str) -> dict[str, Any]:
    r = app_client.get(f"/v1/catalog/models/{model_id}", headers=auth(keys["read"]))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_mixtral_detail_says_what_qlora_quantizes_and_what_stays_16_bit(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    d = _detail(app_client, keys, "mistralai/Mixtral-8x7B-v0.1")
    moe = d["moe"]
    kinds = d["params_by_kind"]
    assert moe["num_experts"] == 8 and moe["experts_per_token"] == 2
    assert moe["fused_expert_params"] == kinds["experts"]  # fused under transformers 5
    assert set(moe["qlora_quantized_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (
        moe["qlora_quantized_params"] + moe["fused_expert_params"] + moe["other_unquantized_params"]
        == d["total_params"]
    )
    assert moe["fused_expert_parameters"] == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    assert moe["experts_can_carry_adapters"] is True
    assert any("stay 16-bit" in n for n in d["notes"])
    assert any("target_parameters" in n for n in d["notes"])
    assert d["lora_default_targets"] == list(PEFT_LORA["mixtral"])
    assert d["lora_default_source"] == "peft_default" and d["worker_can_train"] is True


def test_dense_phi3_and_t5_details(app_client: TestClient, keys: dict[str, str]) -> None:
    phi3 = _detail(app_client, keys, "microsoft/Phi-3-mini-4k-instruct")
    assert phi3["moe"] is None
    assert (phi3["lora_default_targets"], phi3["lora_default_source"]) == ("all-linear", "fallback")
    assert any("peft has no default for model_type 'phi3'" in n for n in phi3["notes"])
    t5 = _detail(app_client, keys, "google-t5/t5-base")
    assert t5["lora_default_targets"] == list(PEFT_LORA["t5"]) and t5["worker_can_train"] is False
    assert any("encoder-decoder" in n for n in t5["notes"])
