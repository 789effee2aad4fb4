"""Cheap checks on a client's model config before transformers builds it.

Building on the meta device allocates no weights, but it still creates one Python module per
layer and expert; a config asking for a million layers would tie up a worker thread for minutes.
These bounds sit well above every public model and reject the rest with the key named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.errors import InvalidInput

# Largest public values as of 2025, for scale: 126 layers and hidden 16384 (Llama-3.1-405B),
# vocab 256,000 (Gemma-2), 256 routed experts (DeepSeek-V3), 131,072 positions (Llama-3.1).
CONFIG_BOUNDS: dict[str, int] = {
    "num_hidden_layers": 1024,
    "n_layer": 1024,
    "num_layers": 1024,
    "num_decoder_layers": 1024,
    "hidden_size": 131_072,
    "n_embd": 131_072,
    "d_model": 131_072,
    "intermediate_size": 1_048_576,
    "n_inner": 1_048_576,
    "d_ff": 1_048_576,
    "moe_intermediate_size": 1_048_576,
    "vocab_size": 4_194_304,
    "num_attention_heads": 4096,
    "n_head": 4096,
    "num_heads": 4096,
    "num_key_value_heads": 4096,
    "num_local_experts": 4096,
    "num_experts": 4096,
    "n_routed_experts": 4096,
    "max_position_embeddings": 16_777_216,
    "n_positions": 16_777_216,
}
MAX_NESTING = 4  # text_config / vision_config go one level down; nothing real goes deeper
# A config whose exact parameter count passes this is refused: ~5x the largest public model.
MAX_TOTAL_PARAMS = 10_000_000_000_000


def check_config(config: Mapping[str, Any], *, field: str, depth: int = 0) -> None:
    """Raise InvalidInput naming the key when a size in `config` is absurd or not an integer."""
    model_type = config.get("model_type")
    if depth == 0 and config.get("auto_map"):
        raise InvalidInput(
            f"model_type={model_type!r}: configs with 'auto_map' need remote code, which tunecost "
            "never runs; use an architecture native to transformers",
            field=f"{field}.auto_map",
            model_type=model_type,
        )
    if depth > MAX_NESTING:
        raise InvalidInput(f"the config nests deeper than {MAX_NESTING} levels", field=field)
    for key, value in config.items():
        where = f"{field}.{key}"
        if isinstance(value, Mapping):
            check_config(value, field=where, depth=depth + 1)
            continue
        bound = CONFIG_BOUNDS.get(key)
        if bound is None or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(
                f"{key} must be an integer, got {value!r}", field=where, model_type=model_type
            )
        if not 0 <= value <= bound:
            raise InvalidInput(
                f"{key}={value} is outside 0..{bound} (larger than any real model); "
                f"model_type={model_type!r}",
                field=where,
                model_type=model_type,
            )
