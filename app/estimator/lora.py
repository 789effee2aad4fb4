"""LoRA on the meta model: the exact trainable count (peft itself) and which layers get adapters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from app.estimator.activations import LoraLayout
from app.estimator.model_analysis import ModelAnalysis, analyze_model, build_meta_model
from app.estimator.spec import LoraSpec

ALL_LINEAR = "all-linear"


def _analysis(analysis_or_config: ModelAnalysis | Mapping[str, Any]) -> ModelAnalysis:
    if isinstance(analysis_or_config, ModelAnalysis):
        return analysis_or_config
    return analyze_model(analysis_or_config)


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _matches(module_name: str, target: str) -> bool:
    # peft's rule for a list of names: the full module name, or its dotted suffix
    return module_name == target or module_name.endswith("." + target)


def _output_layer_names(analysis: ModelAnalysis) -> set[str]:
    # `all-linear` leaves out the output layer (peft `_maybe_include_all_linear_layers`)
    return {
        name for name, _, _ in analysis.linear_layers if _leaf(name) in ("lm_head", "embed_out")
    }


def valid_target_names(analysis: ModelAnalysis) -> list[str]:
    """Leaf names a LoRA `target_modules` entry may use for this model (its linear layers)."""
    return sorted({_leaf(name) for name, _, _ in analysis.linear_layers})


def _checked_targets(analysis: ModelAnalysis, lora: LoraSpec) -> tuple[str, ...] | str:
    if lora.target_modules == ALL_LINEAR:
        return ALL_LINEAR
    names = [name for name, _, _ in analysis.linear_layers]
    unknown = [t for t in lora.target_modules if not any(_matches(n, t) for n in names)]
    if unknown:
        raise ValueError(
            f"LoRA target module(s) {', '.join(map(repr, unknown))} not found in "
            f"{analysis.architecture}; valid names: {', '.join(valid_target_names(analysis))}, "
            f"or {ALL_LINEAR!r}"
        )
    return tuple(sorted(set(lora.target_modules)))


def lora_targets(analysis: ModelAnalysis, lora: LoraSpec) -> tuple[tuple[str, int, int], ...]:
    """The linear layers that get an adapter: (name, in_features, out_features)."""
    targets = _checked_targets(analysis, lora)
    if targets == ALL_LINEAR:
        skip = _output_layer_names(analysis)
        return tuple(layer for layer in analysis.linear_layers if layer[0] not in skip)
    return tuple(
        layer for layer in analysis.linear_layers if any(_matches(layer[0], t) for t in targets)
    )


def lora_trainable_params(
    analysis_or_config: ModelAnalysis | Mapping[str, Any], lora: LoraSpec
) -> int:
    """Exact number of trainable parameters peft creates for this LoRA config (cached)."""
    analysis = _analysis(analysis_or_config)
    targets = _checked_targets(analysis, lora)
    return _peft_count(analysis.config_json, lora.r, targets, tuple(sorted(lora.modules_to_save)))


@lru_cache(maxsize=512)
def _peft_count(
    config_text: str, r: int, targets: tuple[str, ...] | str, modules_to_save: tuple[str, ...]
) -> int:
    import torch
    from peft import LoraConfig, get_peft_model

    model: Any = build_meta_model(json.loads(config_text))
    peft_config = LoraConfig(
        r=r,
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        modules_to_save=list(modules_to_save) or None,
        task_type="SEQ_2_SEQ_LM" if model.config.is_encoder_decoder else "CAUSAL_LM",
    )
    try:
        with torch.device("meta"):
            peft_model = get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ValueError(f"peft cannot apply this LoRA config: {exc}") from exc
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def lora_layout(analysis: ModelAnalysis, lora: LoraSpec) -> LoraLayout:
    """What the activation model needs of a LoRA config: targeted leaf names, rank, dropout."""
    return LoraLayout(
        targets=frozenset(_leaf(name) for name, _, _ in lora_targets(analysis, lora)),
        r=lora.r,
        dropout=lora.dropout,
        saved_modules=frozenset(_leaf(name) for name in lora.modules_to_save),
    )
