"""Default LoRA targets: resolved per model type exactly as peft resolves `target_modules=None`."""

from __future__ import annotations

from typing import Any

import pytest

from app.estimator.lora import lora_targets, lora_trainable_params
from app.estimator.lora_defaults import (
    ALL_LINEAR,
    AUTO,
    FALLBACK_TARGETS,
    TargetSource,
    resolve_lora_targets,
)
from app.estimator.model_analysis import analyze_model, build_meta_model
from app.estimator.spec import LoraSpec
from tests.estimator.realmodel import TINY

# peft has a default for these families; phi3 and qwen2_moe have none (fall back).
WITH_PEFT_DEFAULT = ("llama", "mistral", "qwen2", "gemma", "gemma2", "gpt2", "gpt_neox", "t5")
WITHOUT_PEFT_DEFAULT = ("phi3", "qwen2_moe")


def _peft_adapted(config: dict[str, Any], target_modules: Any) -> tuple[set[str], int]:
    """Module names peft itself wraps on the meta model, and its trainable count."""
    import torch
    from peft import LoraConfig, get_peft_model

    model: Any = build_meta_model(config)
    task = "SEQ_2_SEQ_LM" if model.config.is_encoder_decoder else "CAUSAL_LM"
    peft_config = LoraConfig(r=4, target_modules=target_modules, task_type=task)
    with torch.device("meta"):
        peft_model = get_peft_model(model, peft_config)
    adapted = {
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and "default" in module.lora_A
    }
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return adapted, trainable


@pytest.mark.parametrize("family", WITH_PEFT_DEFAULT)
def test_auto_adapts_what_peft_adapts_without_target_modules(family: str) -> None:
    config = TINY[family]
    analysis = analyze_model(config)
    ours = {name for name, _, _ in lora_targets(analysis, LoraSpec(r=4))}
    peft_names, peft_count = _peft_adapted(config, None)  # peft's own default
    assert ours == peft_names and ours
    assert lora_trainable_params(analysis, LoraSpec(r=4)) == peft_count
    resolved = resolve_lora_targets(model_type=family, requested=AUTO)
    assert resolved.source is TargetSource.PEFT_DEFAULT
    note = resolved.note()
    assert note is not None and family in note


@pytest.mark.parametrize("family", WITHOUT_PEFT_DEFAULT)
def test_without_a_peft_default_auto_falls_back_to_all_linear(family: str) -> None:
    config = TINY[family]
    with pytest.raises(ValueError, match="target_modules"):
        _peft_adapted(config, None)  # peft refuses: it has no default for this model type
    analysis = analyze_model(config)
    ours = {name for name, _, _ in lora_targets(analysis, LoraSpec(r=4))}
    peft_names, peft_count = _peft_adapted(config, FALLBACK_TARGETS)
    assert ours == peft_names and ours
    assert lora_trainable_params(analysis, LoraSpec(r=4)) == peft_count
    resolved = resolve_lora_targets(model_type=family, requested=AUTO)
    assert (resolved.source, resolved.target_modules) == (TargetSource.FALLBACK, ALL_LINEAR)
    assert "peft has no default" in (resolved.note() or "")


def test_requested_targets_are_kept_as_given() -> None:
    resolved = resolve_lora_targets(model_type="gpt2", requested=["c_fc"])
    assert (resolved.for_config(), resolved.source) == (["c_fc"], TargetSource.REQUESTED)
    assert resolved.note() is None
    every = resolve_lora_targets(model_type="gpt2", requested=ALL_LINEAR)
    assert (every.for_config(), every.source) == (ALL_LINEAR, TargetSource.REQUESTED)


def test_default_missing_from_an_odd_config_names_the_field_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"'q_proj'.*set lora\.target_modules.*c_attn"):
        lora_targets(analyze_model(TINY["gpt2"]), LoraSpec(target_modules=["q_proj"]))


def test_a_regex_default_selects_like_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    # peft's mapping holds one regex (gemma4); a regex default must select what peft selects,
    # including one that names a layer by its index.
    from app.estimator import lora_defaults

    regex = r".*layers\.1\.self_attn\.(q_proj|v_proj)"
    monkeypatch.setattr(lora_defaults, "peft_default_targets", lambda model_type: regex)
    config = TINY["llama"]
    analysis = analyze_model(config)
    ours = {name for name, _, _ in lora_targets(analysis, LoraSpec(r=4))}
    peft_names, peft_count = _peft_adapted(config, regex)
    assert (
        ours == peft_names == {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}
    )
    assert lora_trainable_params(analysis, LoraSpec(r=4)) == peft_count
