"""Exact model analysis from a Hugging Face config: parameters by kind and every linear layer.

The model is built with transformers on PyTorch's `meta` device (shapes only, no weights, no
download, never remote code). Building costs time per layer (~10 ms for a 70B layer), so a
decoder whose layers are all alike is built 1 and 3 layers deep and its inventory expanded to
the full depth: exact, because the two builds must agree on the repeated layer and on everything
outside the stack, and the config must hold nothing that makes a layer depend on its index
(`depth.layers_alike_by_config`); anything else is built at full depth. Results are cached by a
hash of the canonical JSON of the config: the second analysis of a config is a dict lookup.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from app.estimator.build_budget import ModelTooLarge, budgeted, check_layer_count, check_size
from app.estimator.depth import at_depth, layers_alike_by_config, lists_cut
from app.estimator.errors import EstimateInputError
from app.estimator.inventory import (
    Inventory,
    StackSignature,
    numel,
    stack_paths,
    stack_signature,
    take_inventory,
)

if TYPE_CHECKING:
    from torch import nn

PARAM_KINDS = ("embeddings", "attention", "mlp", "norms", "lm_head", "experts", "router", "other")

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
REDUCED_DEPTHS = (1, 3)  # depths built to extrapolate: 3 layers catch patterns of period 2 or 3


class ModelConfigError(EstimateInputError):
    """A config that transformers cannot build (unknown architecture, bad values, remote code)."""

    def __init__(self, model_type: str | None, message: str) -> None:
        super().__init__(
            f"model_type={model_type!r}: {message}", field="model", model_type=model_type
        )
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
    # the decoder stack as one repeated layer (None when layers differ or there are two stacks)
    stack: StackSignature | None = field(default=None, repr=False, compare=False)
    depth_extrapolated: bool = False  # counted from depth 1 and 3 builds, not the full depth

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


def analyze_model(config: Mapping[str, Any], *, extrapolate: bool = True) -> ModelAnalysis:
    """Analyse a Hugging Face config (dict) exactly on the meta device; cached by config hash.

    With `extrapolate`, a decoder whose config cannot make its layers differ is built at depth 1
    and 3 instead of its full depth and expanded (`depth`, `inventory`): the same counts and
    layer names as the full build for a fraction of the time. `extrapolate=False` always builds
    the full model (the tests' reference)."""
    text = canonical_json(config)
    return _analyze_cached(hashlib.sha256(text.encode()).hexdigest(), text, extrapolate)


@lru_cache(maxsize=256)
def _analyze_cached(digest: str, text: str, extrapolate: bool) -> ModelAnalysis:
    config = json.loads(text)
    model_type, hf_config = checked_hf_config(config)
    if extrapolate and layers_alike_by_config(hf_config):
        reduced = _reduced_build(config, hf_config)
        if reduced is not None:
            model, stack = reduced
            modules, elements = stack.size_at(hf_config.num_hidden_layers)
            check_size(model_type, modules=modules, elements=elements)  # before expanding it
            inventory = stack.expand(hf_config.num_hidden_layers)
            return _analyse(model, hf_config, inventory, stack, digest, text, extrapolated=True)
    model = _build(model_type, hf_config)
    cfg = model.config
    inventory = take_inventory(model, is_moe=_num_experts(_text_config(cfg)) > 0)
    return _analyse(model, cfg, inventory, _full_stack(model, inventory), digest, text)


def build_meta_model(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate the model of a config on the meta device (no weights, no remote code)."""
    return _build(*checked_hf_config(config))


def checked_hf_config(config: Mapping[str, Any]) -> tuple[str, Any]:
    """(model_type, transformers config) of a config dict; refuses remote code."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelConfigError(None, "the config has no 'model_type'")
    if config.get("auto_map"):
        raise ModelConfigError(model_type, "configs with 'auto_map' need remote code, refused")
    check_layer_count(model_type, config)
    return model_type, _hf_config(model_type, config)


def stack_of(model: nn.Module, inventory: Inventory, depth: int) -> StackSignature | None:
    """The signature of `model` when it has one stack of `depth` alike layers, else None."""
    paths = stack_paths(model, depth)
    return stack_signature(inventory, paths.pop(), depth) if len(paths) == 1 else None


def _build(model_type: str, hf_config: Any) -> nn.Module:
    import torch
    import transformers

    model: nn.Module
    try:
        # Counted as it is built: a config is as large as the model it makes (build_budget).
        with budgeted(model_type), torch.device("meta"):
            if getattr(hf_config, "is_encoder_decoder", False):
                model = transformers.AutoModelForSeq2SeqLM.from_config(
                    hf_config, trust_remote_code=False
                )
            else:
                model = transformers.AutoModelForCausalLM.from_config(
                    hf_config, trust_remote_code=False
                )
            return model
    except ModelTooLarge:
        raise
    except Exception as exc:
        # A client's config meets the library here, and transformers' checks of one fail in
        # any type (ZeroDivisionError for zero heads, its own validation errors): an input
        # problem, whatever the type. Our own analysis code runs outside this `try`.
        raise ModelConfigError(model_type, f"transformers cannot build it: {exc}") from exc


def _hf_config(model_type: str, config: Mapping[str, Any]) -> Any:
    from transformers import AutoConfig

    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except ValueError as exc:
        raise ModelConfigError(model_type, f"unknown architecture: {exc}") from exc
    except Exception as exc:  # the library validating a client's config: as in _build
        raise ModelConfigError(model_type, f"invalid config: {exc}") from exc


def _reduced_build(config: dict[str, Any], hf_config: Any) -> tuple[Any, StackSignature] | None:
    """The model at the largest of `REDUCED_DEPTHS` and its stack signature, when the builds at
    every reduced depth have one stack, alike layers and the same parts outside it."""
    layers = hf_config.num_hidden_layers
    is_moe = _num_experts(hf_config) > 0
    built: list[tuple[Any, Inventory, set[str], int]] = []
    for depth in REDUCED_DEPTHS:
        small = at_depth(config, layers=layers, depth=depth)
        try:
            model_type, small_hf = checked_hf_config(small)
            if small_hf.num_hidden_layers != depth:
                return None
            if not lists_cut(hf_config, small_hf, layers=layers, depth=depth):
                return None
            model = _build(model_type, small_hf)
        except ModelConfigError:
            return None  # the full build decides (and names the error if there is one)
        inventory = take_inventory(model, is_moe=is_moe)
        built.append((model, inventory, stack_paths(model, depth), depth))
    common = set.intersection(*(paths for _, _, paths, _ in built))
    if len(common) != 1:
        return None
    path = common.pop()
    signatures = {stack_signature(inventory, path, depth) for _, inventory, _, depth in built}
    ties = {_tied(model) for model, *_ in built}
    names = {type(model).__name__ for model, *_ in built}
    signature = signatures.pop()
    if signatures or signature is None or len(ties) != 1 or len(names) != 1:
        return None
    return built[-1][0], signature


def _full_stack(model: Any, inventory: Inventory) -> StackSignature | None:
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        return None
    layers = _first(_text_config(cfg), "num_hidden_layers", "n_layer", "num_layers", default=0)
    return stack_of(model, inventory, int(layers)) if layers else None


def _text_config(cfg: Any) -> Any:
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _num_experts(text_cfg: Any) -> int:
    experts = getattr(text_cfg, "num_local_experts", 0) or getattr(text_cfg, "num_experts", 0)
    return int(experts or 0)


def _tied(model: Any) -> bool:
    out_emb = model.get_output_embeddings()
    return out_emb is not None and out_emb.weight is model.get_input_embeddings().weight


def _analyse(
    model: Any,  # a PreTrainedModel (possibly a reduced-depth build of the same model)
    cfg: Any,  # the full model's transformers config
    inventory: Inventory,
    stack: StackSignature | None,
    digest: str,
    text: str,
    *,
    extrapolated: bool = False,
) -> ModelAnalysis:
    raw = json.loads(text)
    text_cfg = _text_config(cfg)
    num_experts = _num_experts(text_cfg)
    by_kind = dict.fromkeys(PARAM_KINDS, 0)
    for param in inventory.params:
        by_kind[param.kind] += param.numel
    total = numel(inventory.params)
    linears = inventory.linears
    experts_per_token = int(getattr(text_cfg, "num_experts_per_tok", 0) or 0) if num_experts else 0
    active = total
    if num_experts:
        active = total - by_kind["experts"] + by_kind["experts"] * experts_per_token // num_experts
    heads = int(_first(text_cfg, "num_attention_heads", "n_head", "num_heads"))
    if heads < 1:  # transformers builds some families with none; every estimate divides by it
        raise ModelConfigError(raw.get("model_type"), f"{heads} attention heads; give at least 1")
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
        tied_embeddings=_tied(model),
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
        param_shapes=tuple(p.shape for p in inventory.params),
        router_weight_params=numel(p for p in inventory.params if p.router_weight),
        stack=stack,
        depth_extrapolated=extrapolated,
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
