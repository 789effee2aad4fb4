"""Model analysis on the meta device against real instantiations and published counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.catalog.model_catalog import (
    UnknownModelError,
    catalog_model_ids,
    get_model_config,
    load_model_configs,
    resolve_model_config,
)
from app.estimator.lora import lora_targets, lora_trainable_params, valid_target_names
from app.estimator.model_analysis import PARAM_KINDS, ModelConfigError, analyze_model
from app.estimator.spec import LoraSpec
from tests.estimator.realmodel import TINY, build_real, with_lora

FAMILY_TARGETS = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "k_proj", "down_proj"],
    "qwen2": ["q_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["k_proj", "up_proj"],
    "phi3": ["qkv_proj", "gate_up_proj"],
    "gpt2": ["c_attn", "c_proj"],
    "gpt_neox": ["query_key_value", "dense"],
    "mixtral": ["q_proj", "v_proj"],
    "qwen2_moe": ["q_proj", "gate_proj"],
    "t5": ["q", "v", "wo"],
}


def _linear_like(model: torch.nn.Module) -> list[tuple[str, int, int]]:
    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            out.append((name, module.in_features, module.out_features))
        elif type(module).__name__ == "Conv1D":
            out.append((name, module.weight.shape[0], module.weight.shape[1]))
    return out


@pytest.mark.parametrize("family", sorted(TINY))
def test_counts_equal_the_real_model(family: str) -> None:
    config = TINY[family]
    analysis = analyze_model(config)
    real = build_real(config)
    assert analysis.total_params == sum(p.numel() for p in real.parameters())
    assert sum(analysis.params_by_kind.values()) == analysis.total_params
    assert list(analysis.linear_layers) == _linear_like(real)
    assert analysis.param_shapes == tuple(tuple(p.shape) for p in real.parameters())


@pytest.mark.parametrize("family", sorted(FAMILY_TARGETS))
def test_lora_count_equals_peft_on_the_real_model(family: str) -> None:
    config = TINY[family]
    lora = LoraSpec(r=4, target_modules=FAMILY_TARGETS[family])
    real = with_lora(build_real(config), lora, fp32_adapters=True)
    trainable = sum(p.numel() for p in real.parameters() if p.requires_grad)
    analysis = analyze_model(config)
    assert lora_trainable_params(analysis, lora) == trainable
    # and by hand: r * (in + out) for every targeted layer
    assert trainable == sum(4 * (i + o) for _, i, o in lora_targets(analysis, lora))


def test_all_linear_and_modules_to_save_match_the_real_model() -> None:
    config = TINY["llama"]
    lora = LoraSpec(r=8, target_modules="all-linear", modules_to_save=["lm_head"])
    real = with_lora(build_real(config), lora, fp32_adapters=True)
    expected = sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert lora_trainable_params(config, lora) == expected
    assert all(
        not name.endswith("lm_head") for name, _, _ in lora_targets(analyze_model(config), lora)
    )


def test_published_counts() -> None:
    llama3 = analyze_model(get_model_config("meta-llama/Meta-Llama-3-8B"))
    assert llama3.total_params == 8_030_261_248
    assert lora_trainable_params(llama3, LoraSpec(r=16, target_modules="all-linear")) == 41_943_040
    llama2 = get_model_config("meta-llama/Llama-2-7b-hf")
    assert analyze_model(llama2).total_params == 6_738_415_616
    assert lora_trainable_params(llama2, LoraSpec(r=8, target_modules=["q_proj", "v_proj"])) == (
        4_194_304
    )


def test_tied_embeddings_are_counted_once() -> None:
    tied = analyze_model(TINY["qwen2"])
    untied = analyze_model(dict(TINY["qwen2"], tie_word_embeddings=False))
    assert tied.tied_embeddings and not untied.tied_embeddings
    assert tied.params_by_kind["lm_head"] == 0
    assert untied.total_params - tied.total_params == untied.params_by_kind["lm_head"]


def test_moe_active_params_count_only_routed_experts() -> None:
    analysis = analyze_model(TINY["mixtral"])
    experts = analysis.params_by_kind["experts"]
    assert analysis.num_experts == 4 and analysis.experts_per_token == 2
    assert analysis.active_params == analysis.total_params - experts // 2
    assert analysis.params_by_kind["router"] > 0


def test_unknown_target_module_names_it_and_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'qkv'") as err:
        lora_trainable_params(TINY["llama"], LoraSpec(target_modules=["q_proj", "qkv"]))
    assert "v_proj" in str(err.value) and "all-linear" in str(err.value)


def test_unbuildable_configs_raise_model_config_error() -> None:
    with pytest.raises(ModelConfigError) as err:
        analyze_model({"model_type": "no-such-architecture", "hidden_size": 8})
    assert err.value.model_type == "no-such-architecture"
    with pytest.raises(ModelConfigError, match="auto_map"):
        analyze_model(dict(TINY["llama"], auto_map={"AutoModel": "x.Y"}))
    with pytest.raises(ModelConfigError, match="model_type"):
        analyze_model({"hidden_size": 8})


def test_valid_target_names_are_cached_and_a_caller_cannot_change_them() -> None:
    analysis = analyze_model(TINY["llama"])
    names = valid_target_names(analysis)
    assert names == [
        "down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"
    ]  # fmt: skip
    names.append("not_a_layer")
    assert valid_target_names(analysis) == names[:-1]


def test_analysis_is_cached_by_config_content() -> None:
    config = TINY["gpt2"]
    first = analyze_model(config)
    assert analyze_model(json.loads(json.dumps(config))) is first
    assert analyze_model(dict(config, n_layer=3)) is not first


CATALOG_IDS = catalog_model_ids()


def test_catalog_has_the_families_the_issue_lists() -> None:
    assert len(CATALOG_IDS) >= 20
    types = {analyze_model(c).model_type for c in load_model_configs().values()}
    assert {"llama", "mistral", "mixtral", "qwen2", "gemma2", "phi3", "gpt2", "t5"} <= types


@pytest.mark.parametrize("model_id", CATALOG_IDS)
def test_every_catalog_model_analyses_on_meta(model_id: str) -> None:
    config = get_model_config(model_id)
    analysis = analyze_model(config)
    assert set(analysis.params_by_kind) <= set(PARAM_KINDS)
    assert sum(analysis.params_by_kind.values()) == analysis.total_params
    assert 0 < analysis.active_params <= analysis.total_params
    assert analysis.linear_layers and analysis.num_layers > 0
    assert analysis.hidden_size == config.get(
        "hidden_size", config.get("d_model", config.get("n_embd"))
    )
    assert lora_trainable_params(analysis, LoraSpec(r=8, target_modules="all-linear")) > 0


def test_resolve_model_config_sources(tmp_path: Path) -> None:
    config = TINY["llama"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert resolve_model_config({"path": str(tmp_path)}) == config
    assert resolve_model_config({"config": config}) == config
    assert resolve_model_config("meta-llama/Llama-2-7b-hf")["hidden_size"] == 4096
    with pytest.raises(UnknownModelError):
        resolve_model_config("nobody/nothing")
    with pytest.raises(ValueError):
        resolve_model_config({"path": str(tmp_path / "missing")})
