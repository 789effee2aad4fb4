"""Configs at another depth, and whether a config's layers can differ by their index.

A decoder layer is built from (config, layer index). Its shapes depend on the index only through
per-layer settings: lists over the layers (`layer_types`, `mlp_only_layers`), index patterns
(`decoder_sparse_step`, `first_k_dense_replace`, `moe_layer_freq`, `attn_layer_period`) or
transformers' per-layer config overrides. A config with none of them has layers that differ
only by index, so a model built at depth 1 and 3 tells the exact inventory at any depth (the
builds themselves are compared too: see `model_analysis`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keys that hold the number of decoder layers, in the order transformers' configs use them.
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# Lists in a config that are not per-layer settings (token ids, class names).
GLOBAL_LISTS = frozenset(
    {
        "architectures",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "bad_words_ids",
        "suppress_tokens",
        "begin_suppress_tokens",
    }
)
# Words in the names of integer settings that place layers by index in transformers models:
# Qwen2-MoE/Qwen3-MoE `decoder_sparse_step`, DeepSeek `first_k_dense_replace`/`moe_layer_freq`,
# Llama 4 `interleave_moe_layer_step`, Jamba `attn_layer_period`/`expert_layer_offset`,
# Ernie 4.5 `moe_layer_interval`/`moe_layer_start_index`, Cohere2 `sliding_window_pattern`.
INDEX_PATTERN_WORDS = (
    "layer",
    "step",
    "freq",
    "interval",
    "period",
    "offset",
    "first_k",
    "every",
    "pattern",
    "start_index",
    "end_index",
)
PERIOD_WORDS = ("step", "freq", "interval", "period", "every")  # a period of 1: every layer
# Index settings that only choose the attention kernel of a layer (never its shapes) and that
# transformers turns into `layer_types`, which is checked as a list: Qwen2 sliding windows.
INDEX_FREE = frozenset({"max_window_layers"})
SMALL_DEPTH = 4  # building this many layers costs less than two reduced builds


def depth_key(config: Mapping[str, Any]) -> str:
    """The key of `config` that holds the number of layers (`num_hidden_layers` if none does)."""
    return next((key for key in DEPTH_KEYS if key in config), DEPTH_KEYS[0])


def at_depth(config: Mapping[str, Any], *, layers: int, depth: int) -> dict[str, Any]:
    """`config` (of a `layers`-deep model) with `depth` layers; per-layer lists cut to length."""
    out = dict(config)
    for key, value in config.items():
        if key not in GLOBAL_LISTS and isinstance(value, list) and len(value) == layers:
            out[key] = value[:depth]
    out[depth_key(config)] = depth
    return out


def layers_alike_by_config(hf_config: Any) -> bool:
    """True when nothing in a (transformers) config can make one decoder layer differ from
    another: no sub-configs, no per-layer overrides, no per-layer lists that vary, no index
    patterns. Encoder-decoders are left to the full build."""
    layers = getattr(hf_config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers <= SMALL_DEPTH:
        return False
    if getattr(hf_config, "is_encoder_decoder", False) or getattr(hf_config, "sub_configs", None):
        return False
    if getattr(hf_config, "is_heterogeneous", False):
        return False
    return all(_setting_alike(key, value, layers) for key, value in hf_config.to_dict().items())


def lists_cut(full: Any, reduced: Any, *, layers: int, depth: int) -> bool:
    """True when every per-layer list of the full config is cut to `depth` in the reduced one."""
    cut = reduced.to_dict()
    return all(
        cut.get(key) == value[:depth]
        for key, value in full.to_dict().items()
        if key not in GLOBAL_LISTS and isinstance(value, list | tuple) and len(value) == layers
    )


def _setting_alike(key: str, value: Any, layers: int) -> bool:
    if isinstance(value, bool) or key in DEPTH_KEYS or key in INDEX_FREE:
        return True
    if isinstance(value, list | tuple):
        if key in GLOBAL_LISTS or not value:
            return True
        return len(value) == layers and all(item == value[0] for item in value)
    if isinstance(value, int) and any(word in key for word in INDEX_PATTERN_WORDS):
        return value == 1 and any(word in key for word in PERIOD_WORDS)
    return True
