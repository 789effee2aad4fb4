"""The estimator engine: pure functions from a model config and a run spec to memory, time, cost."""

from app.estimator.activations import ActivationEstimate, estimate_activations
from app.estimator.lora import lora_targets, lora_trainable_params, valid_target_names
from app.estimator.memory import (
    MemoryBreakdown,
    MemoryEstimate,
    StateBytes,
    estimate_memory,
    resolve_strategy,
    state_bytes,
)
from app.estimator.model_analysis import (
    ModelAnalysis,
    ModelConfigError,
    analyze_model,
    config_hash,
)

__all__ = [
    "ActivationEstimate",
    "MemoryBreakdown",
    "MemoryEstimate",
    "ModelAnalysis",
    "ModelConfigError",
    "StateBytes",
    "analyze_model",
    "config_hash",
    "estimate_activations",
    "estimate_memory",
    "lora_targets",
    "lora_trainable_params",
    "resolve_strategy",
    "state_bytes",
    "valid_target_names",
]
