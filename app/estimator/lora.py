"""LoRA on the meta model: the exact trainable count (peft itself) and which layers get adapters."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from app.estimator.activations import LoraLayout
from app.estimator.depth import at_depth
from app.estimator.errors import EstimateInputError
from app.estimator.inventory import take_inventory
from app.estimator.lora_defaults import ALL_LINEAR, peft_default_targets, resolve_lora_targets
from app.estimator.model_analysis import (
    ModelAnalysis,
    ModelConfigError,
    analyze_model,
    build_meta_model,
    stack_of,
)
from app.estimator.spec import LoraSpec


def _analysis(analysis_or_config: ModelAnalysis | Mapping[str, Any]) -> ModelAnalysis:
    if isinstance(analysis_or_config, ModelAnalysis):
        return analysis_or_config
    return analyze_model(analysis_or_config)


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _matches(module_name: str, target: str) -> bool:
    # peft's rule for a list of names: the full module name, or its dotted suffix
    return module_name == target or module_name.endswith("." + target)


def _selects(targets: tuple[str, ...] | str, module_name: str) -> bool:
    """peft's rule: a string other than all-linear is a regex over the full module name."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module_name) is not None
    return any(_matches(module_name, t) for t in targets)


def _output_layer_names(analysis: ModelAnalysis) -> set[str]:
    # `all-linear` leaves out the output layer (peft `_maybe_include_all_linear_layers`)
    return {
        name for name, _, _ in analysis.linear_layers if _leaf(name) in ("lm_head", "embed_out")
    }


def valid_target_names(analysis: ModelAnalysis) -> list[str]:
    """Leaf names a LoRA `target_modules` entry may use for this model (its linear layers)."""
    return list(_target_names(analysis))


@lru_cache(maxsize=256)
def _target_names(analysis: ModelAnalysis) -> tuple[str, ...]:
    return tuple(sorted({_leaf(name) for name, _, _ in analysis.linear_layers}))


def _requested(analysis: ModelAnalysis, lora: LoraSpec) -> tuple[str, ...] | str:
    """The target modules in effect (`auto` resolved for the model type) as a cache key:
    `all-linear` or a regex as they are, else the sorted distinct names."""
    resolved = resolve_lora_targets(
        model_type=analysis.model_type, requested=lora.target_modules
    ).target_modules
    return resolved if isinstance(resolved, str) else tuple(sorted(set(resolved)))


def _checked_targets(analysis: ModelAnalysis, lora: LoraSpec) -> tuple[str, ...] | str:
    return _checked(analysis, _requested(analysis, lora))


# The memory model asks for the targets once per (GPU count, strategy) of every plan: these
# caches make the second and later asks a lookup (a failed check raises and is not cached).
@lru_cache(maxsize=1024)
def _checked(analysis: ModelAnalysis, requested: tuple[str, ...] | str) -> tuple[str, ...] | str:
    if requested == ALL_LINEAR:
        return ALL_LINEAR
    names = [name for name, _, _ in analysis.linear_layers]
    if isinstance(requested, str):
        unknown = [] if any(_selects(requested, n) for n in names) else [requested]
    else:
        unknown = [t for t in requested if not any(_matches(n, t) for n in names)]
    if unknown:
        default = peft_default_targets(analysis.model_type)
        origin = (
            f" (peft's default for model_type {analysis.model_type!r})"
            if default is not None and _same(default, requested)
            else ""
        )
        raise EstimateInputError(
            f"LoRA target module(s) {', '.join(map(repr, unknown))}{origin} not found in "
            f"{analysis.architecture}; set lora.target_modules to some of: "
            f"{', '.join(valid_target_names(analysis))}, or {ALL_LINEAR!r}",
            field="lora.target_modules",
        )
    return requested


def _same(a: tuple[str, ...] | str, b: tuple[str, ...] | str) -> bool:
    return a == b if isinstance(a, str) or isinstance(b, str) else set(a) == set(b)


def lora_targets(analysis: ModelAnalysis, lora: LoraSpec) -> tuple[tuple[str, int, int], ...]:
    """The linear layers that get an adapter: (name, in_features, out_features)."""
    return _targets(analysis, _requested(analysis, lora))


@lru_cache(maxsize=1024)
def _targets(
    analysis: ModelAnalysis, requested: tuple[str, ...] | str
) -> tuple[tuple[str, int, int], ...]:
    targets = _checked(analysis, requested)
    if targets == ALL_LINEAR:
        skip = _output_layer_names(analysis)
        return tuple(layer for layer in analysis.linear_layers if layer[0] not in skip)
    return tuple(layer for layer in analysis.linear_layers if _selects(targets, layer[0]))


@lru_cache(maxsize=1024)
def _target_leaves(analysis: ModelAnalysis, requested: tuple[str, ...] | str) -> frozenset[str]:
    return frozenset(_leaf(name) for name, _, _ in _targets(analysis, requested))


def lora_trainable_params(
    analysis_or_config: ModelAnalysis | Mapping[str, Any],
    lora: LoraSpec,
    *,
    extrapolate: bool = True,
) -> int:
    """Exact number of trainable parameters peft creates for this LoRA config (cached).

    When the model's decoder layers are all alike and the targets do not name a layer by its
    index, peft runs on the same model at depth 1 and 2 and the count is extrapolated:
    count = c1 + (L - 1) * (c2 - c1), exact because each layer adds the same adapters. Otherwise
    (or with `extrapolate=False`) peft runs on the full-depth meta model."""
    analysis = _analysis(analysis_or_config)
    targets = _checked_targets(analysis, lora)
    to_save = tuple(sorted(lora.modules_to_save))
    if extrapolate and analysis.stack is not None and _index_free(targets, to_save):
        one = _reduced_peft_count(analysis, 1, lora.r, targets, to_save)
        two = None if one is None else _reduced_peft_count(analysis, 2, lora.r, targets, to_save)
        if one is not None and two is not None:
            return one + (analysis.num_layers - 1) * (two - one)
    return _peft_count(analysis.config_json, lora.r, targets, to_save)


def _index_free(targets: tuple[str, ...] | str, modules_to_save: tuple[str, ...]) -> bool:
    """True when no name picks a layer by its index (`layers.3.mlp`): then every layer matches
    the same names."""
    if isinstance(targets, str) and targets != ALL_LINEAR:
        return False  # a regex may name layers by index: count on the full model
    names = (() if isinstance(targets, str) else targets) + modules_to_save
    return not any(part.isdigit() for name in names for part in name.split("."))


@lru_cache(maxsize=512)
def _reduced_peft_count(
    analysis: ModelAnalysis,
    depth: int,
    r: int,
    targets: tuple[str, ...] | str,
    modules_to_save: tuple[str, ...],
) -> int | None:
    """peft's count on the model cut to `depth` layers; None unless that build is the same
    model (outside parts and layer) as the analysed one, only shorter."""
    config = at_depth(analysis.config, layers=analysis.num_layers, depth=depth)
    try:
        model: Any = build_meta_model(config)
    except ModelConfigError:
        return None
    inventory = take_inventory(model, is_moe=analysis.num_experts > 0)
    if stack_of(model, inventory, depth) != analysis.stack:
        return None
    return _inject(model, r, targets, modules_to_save)


@lru_cache(maxsize=512)
def _peft_count(
    config_text: str, r: int, targets: tuple[str, ...] | str, modules_to_save: tuple[str, ...]
) -> int:
    return _inject(build_meta_model(json.loads(config_text)), r, targets, modules_to_save)


def _inject(
    model: Any, r: int, targets: tuple[str, ...] | str, modules_to_save: tuple[str, ...]
) -> int:
    """Trainable parameters after peft puts LoRA on `model` (a meta model, changed in place)."""
    import torch
    from peft import LoraConfig, get_peft_model

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
        raise EstimateInputError(
            f"peft cannot apply this LoRA config: {exc}", field="lora"
        ) from exc
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def lora_layout(analysis: ModelAnalysis, lora: LoraSpec) -> LoraLayout:
    """What the activation model needs of a LoRA config: targeted leaf names, rank, dropout."""
    return LoraLayout(
        targets=_target_leaves(analysis, _requested(analysis, lora)),
        r=lora.r,
        dropout=lora.dropout,
        saved_modules=frozenset(_leaf(name) for name in lora.modules_to_save),
    )
