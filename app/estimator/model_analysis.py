"""Exact model analysis from a Hugging Face config: parameters by kind and every linear layer.

The model is built with transformers on PyTorch's `meta` device (shapes only, no weights, no
download, never remote code), so a 405B config costs the same as a tiny one. Results are cached
by a hash of the canonical JSON of the config: the second analysis of a config is a dict lookup.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

PARAM_KINDS = ("embeddings", "attention", "mlp", "norms", "lm_head", "experts", "router", "other")

# Substrings of module paths that mark each block; they cover the transformers naming of every
# catalog family (Llama/Mistral/Qwen2/Gemma/Phi-3 `self_attn`/`mlp`, GPT-2 `attn`, GPT-NeoX
# `attention`, T5 `SelfAttention`/`EncDecAttention`/`DenseReluDense`, MoE `experts`).
# Config attributes copied into `ModelAnalysis.forward_options` (defaults resolved).
FORWARD_OPTIONS = (
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "attention_dropout",
    "attn_pdrop",
    "resid_pdrop",
    "embd_pdrop",
    "hidden_dropout",
    "dropout_rate",
    "use_parallel_residual",
    "activation_function",
    "hidden_act",
    "feed_forward_proj",
)
_ATTENTION_MARKS = ("attn", "attention", "selfattention", "encdecattention")
_MLP_MARKS = ("mlp", "feed_forward", "densereludense", "ffn")
_EXPERT_MARKS = ("experts",)


class ModelConfigError(Exception):
    """A config that transformers cannot build (unknown architecture, bad values, remote code)."""

    def __init__(self, model_type: str | None, message: str) -> None:
        super().__init__(f"model_type={model_type!r}: {message}")
        self.model_type = model_type
        self.message = message


@dataclass(frozen=True, eq=False)
class ModelAnalysis:
    """What the estimator needs to know about a model, all counted exactly on the meta device.

    Two analyses are equal when they come from the same config (same hash), so an analysis can
    key a cache."""

    model_type: str
    architecture: str
    config_hash: str
    total_params: int
    params_by_kind: Mapping[str, int]
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    is_encoder_decoder: bool
    num_experts: int  # 0 for a dense model
    experts_per_token: int  # 0 for a dense model
    active_params: int  # parameters one token passes through (all but the unrouted experts)
    max_position_embeddings: int
    linear_layers: tuple[tuple[str, int, int], ...]  # (module name, in_features, out_features)
    num_decoder_layers: int = 0  # encoder-decoder only; `num_layers` is then the encoder's
    moe_intermediate_size: int = 0  # per routed expert
    shared_expert_intermediate_size: int = 0  # always-active expert (Qwen2-MoE)
    config_json: str = field(default="{}", repr=False)  # canonical JSON the analysis came from
    param_shapes: tuple[tuple[int, ...], ...] = field(default=(), repr=False)  # each tensor once
    router_weight_params: int = 0  # MoE routers that are not nn.Linear (they still matmul)
    # config values (after transformers' defaults) that shape the forward pass: dropouts,
    # activation, soft-capping, residual layout
    forward_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelAnalysis) and other.config_hash == self.config_hash

    def __hash__(self) -> int:
        return hash(self.config_hash)

    @property
    def config(self) -> dict[str, Any]:
        """The analysed config as a fresh dict."""
        return dict(json.loads(self.config_json))

    @property
    def matmul_params_per_token(self) -> int:
        """Weights a token multiplies by (linear layers + routed share of experts), for FLOPs."""
        dense = sum(i * o for _, i, o in self.linear_layers)
        experts = self.params_by_kind.get("experts", 0)
        if self.num_experts:
            experts = experts * self.experts_per_token // self.num_experts
        return dense + experts


def canonical_json(config: Mapping[str, Any]) -> str:
    """The config as sorted, compact JSON: equal configs give equal text."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def analyze_model(config: Mapping[str, Any]) -> ModelAnalysis:
    """Analyse a Hugging Face config (dict) exactly on the meta device; cached by config hash."""
    text = canonical_json(config)
    return _analyze_cached(hashlib.sha256(text.encode()).hexdigest(), text)


@lru_cache(maxsize=256)
def _analyze_cached(digest: str, text: str) -> ModelAnalysis:
    config = json.loads(text)
    model = build_meta_model(config)
    return _analyse(model, digest, text)


def build_meta_model(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate the model of a config on the meta device (no weights, no remote code)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelConfigError(None, "the config has no 'model_type'")
    if config.get("auto_map"):
        raise ModelConfigError(model_type, "configs with 'auto_map' need remote code, refused")
    hf_config = _hf_config(model_type, config)
    import torch
    import transformers

    auto = (
        transformers.AutoModelForSeq2SeqLM
        if getattr(hf_config, "is_encoder_decoder", False)
        else transformers.AutoModelForCausalLM
    )
    try:
        with torch.device("meta"):
            return auto.from_config(hf_config, trust_remote_code=False)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError, ImportError) as exc:
        raise ModelConfigError(model_type, f"transformers cannot build it: {exc}") from exc


def _hf_config(model_type: str, config: Mapping[str, Any]) -> Any:
    from transformers import AutoConfig

    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except ValueError as exc:
        raise ModelConfigError(model_type, f"unknown architecture: {exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelConfigError(model_type, f"invalid config: {exc}") from exc


def _classify(path: str, module: nn.Module, lm_head_modules: set[int], is_moe: bool) -> str:
    from torch import nn

    low = path.lower()
    cls = type(module).__name__.lower()
    if id(module) in lm_head_modules:
        return "lm_head"
    if "norm" in cls:
        return "norms"
    if is_moe and ("router" in cls or low.endswith(".gate") or low.endswith("shared_expert_gate")):
        return "router"
    if any(mark in low for mark in _EXPERT_MARKS) or "experts" in cls:
        return "experts"
    if any(mark in low for mark in _ATTENTION_MARKS):
        return "attention"
    if isinstance(module, nn.Embedding):
        return "embeddings"
    if any(mark in low for mark in _MLP_MARKS):
        return "mlp"
    return "other"


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of an nn.Linear or of a transformers Conv1D (GPT-2's transposed linear)."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        weight: Any = module.weight
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def _analyse(model: Any, digest: str, text: str) -> ModelAnalysis:  # a PreTrainedModel
    raw = json.loads(text)
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    num_experts = int(
        getattr(text_cfg, "num_local_experts", 0) or getattr(text_cfg, "num_experts", 0) or 0
    )
    out_emb = model.get_output_embeddings()
    in_emb = model.get_input_embeddings()
    tied = out_emb is not None and out_emb.weight is in_emb.weight
    lm_head_ids = {id(out_emb)} if out_emb is not None and not tied else set()

    by_kind = dict.fromkeys(PARAM_KINDS, 0)
    owners: dict[int, str] = {}
    for path, module in model.named_modules():
        for _, param in module.named_parameters(recurse=False):
            if id(param) not in owners:  # a tied parameter belongs to its first owner
                owners[id(param)] = _classify(path, module, lm_head_ids, num_experts > 0)
                by_kind[owners[id(param)]] += param.numel()
    total = sum(p.numel() for p in model.parameters())
    linears = tuple(
        (name, shape[0], shape[1])
        for name, module in model.named_modules()
        if (shape := _linear_shape(module)) is not None
    )
    experts_per_token = int(getattr(text_cfg, "num_experts_per_tok", 0) or 0) if num_experts else 0
    active = total
    if num_experts:
        active = total - by_kind["experts"] + by_kind["experts"] * experts_per_token // num_experts
    heads = int(_first(text_cfg, "num_attention_heads", "n_head", "num_heads"))
    hidden = int(_first(text_cfg, "hidden_size", "n_embd", "d_model"))
    head_dim = getattr(text_cfg, "head_dim", None) or getattr(text_cfg, "d_kv", None)
    intermediate = _first(text_cfg, "intermediate_size", "n_inner", "d_ff", default=None)
    return ModelAnalysis(
        model_type=str(raw["model_type"]),
        architecture=type(model).__name__,
        config_hash=digest,
        total_params=total,
        params_by_kind={k: v for k, v in by_kind.items() if v or k not in ("experts", "router")},
        num_layers=int(_first(text_cfg, "num_hidden_layers", "n_layer", "num_layers")),
        hidden_size=hidden,
        intermediate_size=int(intermediate) if intermediate else 4 * hidden,
        num_attention_heads=heads,
        num_kv_heads=int(getattr(text_cfg, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim or hidden // heads),
        vocab_size=int(text_cfg.vocab_size),
        tied_embeddings=tied,
        is_encoder_decoder=bool(getattr(cfg, "is_encoder_decoder", False)),
        num_experts=num_experts,
        experts_per_token=experts_per_token,
        active_params=active,
        max_position_embeddings=int(
            _first(text_cfg, "max_position_embeddings", "n_positions", default=0) or 0
        ),
        linear_layers=linears,
        num_decoder_layers=int(getattr(cfg, "num_decoder_layers", 0) or 0)
        if getattr(cfg, "is_encoder_decoder", False)
        else 0,
        moe_intermediate_size=int(getattr(text_cfg, "moe_intermediate_size", 0) or 0)
        or (int(intermediate or 0) if num_experts else 0),
        shared_expert_intermediate_size=int(
            getattr(text_cfg, "shared_expert_intermediate_size", 0) or 0
        ),
        config_json=text,
        forward_options=_forward_options(text_cfg),
        param_shapes=tuple(tuple(int(x) for x in p.shape) for p in model.parameters()),
        router_weight_params=sum(
            p.numel()
            for m in model.modules()
            if "router" in type(m).__name__.lower() and _linear_shape(m) is None
            for p in m.parameters(recurse=False)
            if p.dim() == 2
        ),
    )


def _forward_options(cfg: Any) -> dict[str, Any]:
    options = {
        name: getattr(cfg, name)
        for name in FORWARD_OPTIONS
        if isinstance(getattr(cfg, name, None), str | int | float | bool)
    }
    rope = getattr(cfg, "rope_parameters", None)  # transformers 5 keeps partial rotary here
    if isinstance(rope, Mapping) and isinstance(rope.get("partial_rotary_factor"), int | float):
        options["partial_rotary_factor"] = rope["partial_rotary_factor"]
    return options


_MISSING = object()


def _first(cfg: Any, *names: str, default: Any = _MISSING) -> Any:
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    if default is _MISSING:
        raise ModelConfigError(getattr(cfg, "model_type", None), f"config lacks {names[0]}")
    return default
