"""The estimator engine: pure functions from a model config and a run spec to memory, time, cost."""

from app.estimator.lora import lora_targets, lora_trainable_params, valid_target_names
from app.estimator.model_analysis import (
    ModelAnalysis,
    ModelConfigError,
    analyze_model,
    config_hash,
)

__all__ = [
    "ModelAnalysis",
    "ModelConfigError",
    "analyze_model",
    "config_hash",
    "lora_targets",
    "lora_trainable_params",
    "valid_target_names",
]
