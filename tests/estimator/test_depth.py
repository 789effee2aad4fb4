"""Depth extrapolation: counts from builds 1-3 layers deep equal the full build and the real model.

Every catalog model is analysed both ways (extrapolated and full depth) and compared field by
field, and peft's LoRA count is compared with peft on the full-depth model (q,v and all-linear).
Tiny real models 6 layers deep check the extrapolated numbers against real tensors; models whose
layers differ (MoE every other layer, dense-only layers) must take the full build.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
import torch
from torch import nn

from app.catalog.model_catalog import catalog_model_ids, get_model_config
from app.estimator import model_analysis
from app.estimator.depth import layers_alike_by_config
from app.estimator.inventory import stack_signature, take_inventory
from app.estimator.lora import lora_trainable_params
from app.estimator.model_analysis import ModelAnalysis, analyze_model, checked_hf_config
from app.estimator.spec import LoraSpec
from tests.estimator.realmodel import TINY, build_real, with_lora
from tests.estimator.test_model_analysis import FAMILY_TARGETS, _linear_like

DEEP = 6  # deeper than depth.SMALL_DEPTH, so tiny models take the extrapolated path
QV = {"gpt2": ["c_attn"], "t5": ["q", "v"], "phi3": ["qkv_proj"], "gpt_neox": ["query_key_value"]}
FULL_BUILD_TYPES = {"t5", "gemma2"}  # encoder-decoder; sliding/full attention alternate


def _fields(analysis: ModelAnalysis) -> dict[str, Any]:
    return {f.name: getattr(analysis, f.name) for f in fields(analysis)}


def deeper(config: dict[str, Any], layers: int = DEEP, **changes: Any) -> dict[str, Any]:
    """`config` with `layers` decoder layers (and any other changes)."""
    key = "n_layer" if "n_layer" in config else "num_hidden_layers"
    return {**config, key: layers, **changes}


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("model_id", catalog_model_ids())
def test_extrapolated_analysis_and_lora_equal_the_full_build(model_id: str) -> None:
    config = get_model_config(model_id)
    fast = analyze_model(config)
    full = analyze_model(config, extrapolate=False)
    assert fast.depth_extrapolated == (fast.model_type not in FULL_BUILD_TYPES)
    assert not full.depth_extrapolated
    # every field: counts by kind, each linear layer's name and shape, each tensor's shape, the
    # repeated layer and what lies outside it
    same = {k: v for k, v in _fields(fast).items() if k != "depth_extrapolated"}
    assert same == {k: v for k, v in _fields(full).items() if k != "depth_extrapolated"}
    assert (full.stack is not None) == (not full.is_encoder_decoder)
    for lora in (
        LoraSpec(r=8, target_modules=QV.get(fast.model_type, ["q_proj", "v_proj"])),
        LoraSpec(r=16, target_modules="all-linear"),
    ):
        expected = lora_trainable_params(full, lora, extrapolate=False)
        assert lora_trainable_params(fast, lora) == expected


@pytest.mark.parametrize("family", sorted(set(FAMILY_TARGETS) - {"t5"}))
def test_deep_tiny_models_extrapolate_to_the_real_counts(family: str) -> None:
    config = deeper(TINY[family])
    analysis = analyze_model(config)
    assert analysis.depth_extrapolated == (family not in FULL_BUILD_TYPES)
    real = build_real(config)
    assert analysis.total_params == sum(p.numel() for p in real.parameters())
    assert analysis.param_shapes == tuple(tuple(p.shape) for p in real.parameters())
    assert list(analysis.linear_layers) == _linear_like(real)
    lora = LoraSpec(r=4, target_modules=FAMILY_TARGETS[family])
    assert lora_trainable_params(analysis, lora) == trainable(
        with_lora(real, lora, fp32_adapters=True)
    )


@pytest.mark.parametrize(
    "changes",
    [{"decoder_sparse_step": 2}, {"mlp_only_layers": [4]}],
    ids=["moe-every-other-layer", "one-dense-layer"],
)
def test_layers_that_differ_take_the_full_build(changes: dict[str, Any]) -> None:
    config = deeper(TINY["qwen2_moe"], **changes)
    analysis = analyze_model(config)
    assert not analysis.depth_extrapolated and analysis.stack is None
    real = build_real(config)
    assert analysis.total_params == sum(p.numel() for p in real.parameters())
    assert list(analysis.linear_layers) == _linear_like(real)
    lora = LoraSpec(r=4, target_modules=["q_proj", "gate_proj"])
    assert lora_trainable_params(analysis, lora) == trainable(
        with_lora(real, lora, fp32_adapters=True)
    )


def test_reduced_builds_are_compared_even_when_the_config_looks_uniform(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the config rule is bypassed: the depth 1 and 3 builds themselves show that layer 1 (MoE)
    # differs from layer 0 (dense), so the analysis still builds the full model
    monkeypatch.setattr(model_analysis, "layers_alike_by_config", lambda _cfg: True)
    config = deeper(TINY["qwen2_moe"], 5, decoder_sparse_step=2)
    analysis = analyze_model(config)
    assert not analysis.depth_extrapolated
    assert analysis.total_params == sum(p.numel() for p in build_real(config).parameters())


def test_a_target_that_names_a_layer_is_counted_on_the_full_model() -> None:
    config = deeper(TINY["llama"])
    analysis = analyze_model(config)
    assert analysis.stack is not None
    lora = LoraSpec(r=4, target_modules=["layers.4.self_attn.q_proj", "v_proj"])
    expected = trainable(with_lora(build_real(config), lora, fp32_adapters=True))
    assert lora_trainable_params(analysis, lora) == expected == 4 * (64 + 64) * (1 + DEEP)


@pytest.mark.parametrize(
    ("config", "alike"),
    [
        (get_model_config("meta-llama/Llama-3.1-70B"), True),
        (get_model_config("google/gemma-2-9b"), False),  # layer_types alternate
        (get_model_config("google-t5/t5-base"), False),  # encoder-decoder
        (TINY["llama"], False),  # 2 layers: the full build is cheaper
        (deeper(TINY["qwen2_moe"]), True),  # decoder_sparse_step 1: MoE on every layer
        (deeper(TINY["qwen2_moe"], decoder_sparse_step=3), False),
        ({"model_type": "deepseek_v3", "num_hidden_layers": 8, "first_k_dense_replace": 2}, False),
        ({"model_type": "jamba", "num_hidden_layers": 8}, False),  # attention every 8th layer
    ],
)
def test_config_rule_for_layers_that_may_differ(config: dict[str, Any], alike: bool) -> None:
    assert layers_alike_by_config(checked_hf_config(config)[1]) is alike


class _Stack(nn.Module):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList(nn.Linear(4, w) for w in widths)
        self.norm = nn.LayerNorm(4)


def test_a_stack_signature_expands_to_the_deeper_model() -> None:
    three = take_inventory(_Stack([4, 4, 4]), is_moe=False)
    signature = stack_signature(three, "layers", 3)
    assert signature is not None
    assert signature.expand(7) == take_inventory(_Stack([4] * 7), is_moe=False)
    assert signature == stack_signature(take_inventory(_Stack([4]), is_moe=False), "layers", 1)
    assert stack_signature(take_inventory(_Stack([4, 8, 4]), is_moe=False), "layers", 3) is None
    with torch.device("meta"):
        assert take_inventory(_Stack([4] * 5), is_moe=False) == signature.expand(5)
