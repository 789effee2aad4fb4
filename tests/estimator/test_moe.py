"""MoE models: what QLoRA quantizes (checked against bitsandbytes on tiny models) and the notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.catalog import load_catalog
from app.estimator.engine import estimate
from app.estimator.model_analysis import analyze_model
from app.estimator.moe import moe_quantization
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
)
from tests.estimator.realmodel import TINY, build_real, load_4bit

QWEN3_MOE_TINY: dict[str, Any] = {
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 256,
    "max_position_embeddings": 128,
}
# Qwen3-30B-A3B's public config.json (the sizes that count parameters).
QWEN3_30B_A3B: dict[str, Any] = {
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": False,
}
MOE = {"mixtral": TINY["mixtral"], "qwen2_moe": TINY["qwen2_moe"], "qwen3_moe": QWEN3_MOE_TINY}


def _bnb_split(model: Any) -> tuple[int, int, set[str]]:
    """(weights bitsandbytes holds in 4 bits, parameters it left alone, 4-bit module names)."""
    quantized = 0
    names: set[str] = set()
    packed: set[int] = set()
    for name, module in model.named_modules():
        if type(module).__name__ == "Linear4bit":
            quantized += module.in_features * module.out_features
            names.add(name.rsplit(".", 1)[-1])
            packed.add(id(module.weight))
    left = sum(p.numel() for p in model.parameters() if id(p) not in packed)
    return quantized, left, names


@pytest.mark.parametrize("family", list(MOE))
def test_split_matches_what_bitsandbytes_quantizes(family: str, tmp_path: Path) -> None:
    config = MOE[family]
    split = moe_quantization(analyze_model(config))
    assert split is not None
    quantized = load_4bit(build_real(config), tmp_path, quant_type="nf4", double_quant=True)
    bnb_quantized, bnb_left, bnb_names = _bnb_split(quantized)
    assert split.qlora_quantized_params == bnb_quantized
    assert set(split.qlora_quantized_modules) == bnb_names
    assert split.fused_expert_params + split.other_unquantized_params == bnb_left
    experts_left = sum(
        p.numel()
        for n, p in quantized.named_parameters()
        if ".experts." in n and p.dtype == torch.bfloat16
    )
    assert split.fused_expert_params == experts_left > 0


@pytest.mark.parametrize("family", list(MOE))
def test_named_expert_parameters_take_peft_adapters(family: str) -> None:
    from peft import LoraConfig, get_peft_model

    split = moe_quantization(analyze_model(MOE[family]))
    assert split is not None and split.experts_can_carry_adapters
    model = build_real(MOE[family])
    plain = LoraConfig(r=2, target_modules=["q_proj"])
    with_experts = LoraConfig(
        r=2, target_modules=["q_proj"], target_parameters=split.fused_expert_parameters
    )
    base = get_peft_model(build_real(MOE[family]), plain).get_nb_trainable_parameters()[0]
    more = get_peft_model(model, with_experts).get_nb_trainable_parameters()[0]
    assert more > base  # the names the notes suggest are ones peft accepts and adapts


def test_dense_models_have_no_moe_split() -> None:
    assert moe_quantization(analyze_model(TINY["llama"])) is None


def _estimate(config: dict[str, Any], methods: list[Method]) -> Any:
    return estimate(
        analysis=analyze_model(config),
        dataset=DatasetShape(total_tokens=1e7),
        methods=methods,
        training=TrainingSpec(),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        hardware=HardwareSpec(),
        catalog=load_catalog(),
    )


def test_qwen3_30b_a3b_notes_say_what_qlora_quantizes_and_what_stays_16_bit() -> None:
    c = QWEN3_30B_A3B
    layers, hidden, head = c["num_hidden_layers"], c["hidden_size"], c["head_dim"]
    q = c["num_attention_heads"] * head
    kv = c["num_key_value_heads"] * head
    attention = layers * (hidden * q + 2 * hidden * kv + q * hidden)  # q, k, v, o: no biases
    experts = layers * c["num_experts"] * 3 * hidden * c["moe_intermediate_size"]

    result = _estimate(c, list(Method))
    split = moe_quantization(analyze_model(c))
    assert split is not None
    assert (split.qlora_quantized_params, split.fused_expert_params) == (attention, experts)
    quant_note = next(n for n in result.notes if n.startswith("MoE, QLoRA"))
    assert f"{attention / 1e9:.2f}B parameters" in quant_note and "4 bits" in quant_note
    assert f"{experts / 1e9:.2f}B routed-expert parameters" in quant_note
    assert "stay 16-bit" in quant_note and "mlp.experts.gate_up_proj" in quant_note
    adapter_note = next(n for n in result.notes if n.startswith("MoE, LoRA"))
    assert "target_parameters" in adapter_note
    # no adapter method asked: nothing to say about QLoRA or adapters
    assert not [n for n in _estimate(c, [Method.FULL]).notes if n.startswith("MoE")]
    # LoRA only: the adapter note, not the quantization one
    lora_notes = [n for n in _estimate(c, [Method.LORA]).notes if n.startswith("MoE")]
    assert len(lora_notes) == 1 and lora_notes[0].startswith("MoE, LoRA")
