"""Tiny real models on CPU and what PyTorch really holds for them (the tests' ground truth)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from app.estimator.conventions import adapter_dtype
from app.estimator.spec import LoraSpec

if TYPE_CHECKING:
    from peft import PeftModel

VOCAB = 256
SEQ = 32
BATCH = 2

# Tiny configs per family: every dimension different so that a wrong term cannot hide.
TINY: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
    },
    "mistral": {
        "model_type": "mistral",
        "hidden_size": 64,
        "intermediate_size": 112,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "sliding_window": 64,
    },
    "qwen2": {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
    },
    "gemma": {
        "model_type": "gemma",
        "hidden_size": 48,
        "intermediate_size": 96,
        "head_dim": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
    },
    "gemma2": {
        "model_type": "gemma2",
        "hidden_size": 48,
        "intermediate_size": 96,
        "head_dim": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "sliding_window": 16,
        "query_pre_attn_scalar": 16,
    },
    "phi3": {
        "model_type": "phi3",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "pad_token_id": 0,
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 128,
        "vocab_size": VOCAB,
        "attn_pdrop": 0.0,
    },
    "gpt_neox": {
        "model_type": "gpt_neox",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "rotary_pct": 0.25,
    },
    "mixtral": {
        "model_type": "mixtral",
        "hidden_size": 64,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
    },
    "qwen2_moe": {
        "model_type": "qwen2_moe",
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 80,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
    },
    "t5": {
        "model_type": "t5",
        "d_model": 64,
        "d_ff": 96,
        "d_kv": 16,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "vocab_size": VOCAB,
        "relative_attention_num_buckets": 8,
        "decoder_start_token_id": 0,
        "pad_token_id": 0,
    },
}


def build_real(config: dict[str, Any], *, attention: str | None = None) -> nn.Module:
    """The config's model with random fp32 weights on CPU (transformers' default attention
    unless one is named)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    kwargs["use_cache"] = False  # training: no KV cache (with it, k/v are cat copies)
    hf = AutoConfig.for_model(config["model_type"], **kwargs)
    chosen = {} if attention is None else {"attn_implementation": attention}
    model: nn.Module
    if hf.is_encoder_decoder:
        model = AutoModelForSeq2SeqLM.from_config(hf, **chosen)
    else:
        model = AutoModelForCausalLM.from_config(hf, **chosen)
    return model


def with_lora(model: nn.Module, lora: LoraSpec, *, fp32_adapters: bool) -> PeftModel:
    """peft LoRA on `model` (adapters kept in fp32 only when asked, like peft's default)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=int(lora.alpha),
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=lora.modules_to_save or None,
    )
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=fp32_adapters)
    assert isinstance(peft_model, PeftModel)  # a mixed-adapter model only when asked for
    return peft_model


def load_4bit(
    model: nn.Module, folder: Path, *, quant_type: str, double_quant: bool, attention: str = "sdpa"
) -> nn.Module:
    """Save `model` and load it back quantized by bitsandbytes (CPU backend), bf16 compute,
    in the layout and with the preparation the worker trains with."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from worker.training.model import freeze_4bit_base, keep_4bit_training_layout

    model.save_pretrained(folder)  # type: ignore[operator]  # a transformers model behind nn.Module, which does not declare it
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    quantized = AutoModelForCausalLM.from_pretrained(
        folder,
        quantization_config=bnb,
        dtype=torch.bfloat16,
        device_map="cpu",
        attn_implementation=attention,
    )
    keep_4bit_training_layout(quantized)
    frozen: nn.Module = freeze_4bit_base(quantized)
    return frozen


def worker_adapters_fp32(precision: str) -> bool:
    """Whether the worker keeps LoRA adapters in fp32 at `precision` (the convention)."""
    return adapter_dtype(precision=precision) == "fp32"


def batch(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A fixed random batch of BATCH x SEQ tokens with labels (and decoder inputs for T5)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=gen)
    if config["model_type"] == "t5":
        return {"input_ids": ids, "labels": ids.flip(1)}
    return {"input_ids": ids, "labels": ids}


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from _tensors(item)


@contextlib.contextmanager
def _layer_inputs(model: nn.Module, sink: dict[int, int]) -> Iterator[None]:
    """Record the hidden-states input of every gradient-checkpointed layer."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        for t in _tensors((hidden, kwargs.get("position_embeddings"))):
            sink[_storage_key(t)] = t.untyped_storage().nbytes()

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, GradientCheckpointingLayer)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# grad_fn classes that only reshape or cast: a tensor reached from a parameter through them
# alone is a copy of that parameter (autocast's 16-bit weight copies), not an activation
_COPY_FNS = {
    "ToCopyBackward0",
    "TBackward0",
    "ViewBackward0",
    "TransposeBackward0",
    "IndexBackward0",
    "UnsafeViewBackward0",
    "SelectBackward0",
    "PermuteBackward0",
    "ExpandBackward0",
}


def _is_param_copy(t: torch.Tensor) -> bool:
    fn = t.grad_fn
    while fn is not None and type(fn).__name__ in _COPY_FNS:
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return fn is not None and type(fn).__name__ == "AccumulateGrad"


def measure_saved_bytes(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    checkpointing: bool = False,
    autocast: torch.dtype | None = None,
) -> tuple[int, int]:
    """(activation bytes, parameter-copy bytes) autograd keeps for backward after one forward.

    Storages are counted once; parameters and buffers are excluded; 16-bit copies of trainable
    parameters made by autocast are returned apart; with checkpointing, the inputs kept for each
    layer's recomputation count as activations."""
    exclude = {_storage_key(p) for p in model.parameters()}
    exclude |= {_storage_key(b) for b in model.buffers()}
    seen: dict[int, int] = {}
    copies: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in exclude and key != 0:
            (copies if _is_param_copy(t) else seen)[key] = t.untyped_storage().nbytes()
        return t

    if checkpointing:
        model.gradient_checkpointing_enable()  # type: ignore[operator]  # a transformers model behind nn.Module, which does not declare it
    model.train()
    kept: dict[int, int] = {}
    cast = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
    inputs_hook = _layer_inputs(model, kept) if checkpointing else contextlib.nullcontext()
    with cast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), inputs_hook:
        out = model(**inputs)
    seen.update({k: v for k, v in kept.items() if k not in exclude})
    out.loss.backward()  # the graph was real: it must run
    return sum(seen.values()), sum(copies.values())
