"""Which modules get LoRA adapters when a request names none: peft's own default per model type.

`LoraConfig(target_modules=None)` makes peft look the model's `model_type` up in
`peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` and refuse model types
it has no entry for. tunecost reads that very mapping from the installed peft (so a peft upgrade
moves estimator and worker together) and, where peft has no entry (Phi-3, the Qwen MoE models,
...), falls back to `"all-linear"`: every linear layer but the output layer, peft's own generic
choice. The estimator and the worker both resolve through `resolve_lora_targets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

AUTO = "auto"  # `LoraSpec.target_modules` default: resolve per model type
ALL_LINEAR = "all-linear"  # peft's keyword for every linear layer but the output layer
# Where peft has no default for a model type: peft's generic `all-linear` (also what the QLoRA
# paper, Dettmers et al. 2023 section 4, found necessary to match full fine-tuning quality).
FALLBACK_TARGETS = ALL_LINEAR


class TargetSource(StrEnum):
    """Where the resolved target modules came from."""

    REQUESTED = "requested"  # the request named them (a list, or all-linear)
    PEFT_DEFAULT = "peft_default"  # peft's mapping for the model type
    FALLBACK = "fallback"  # peft has no default for the model type: FALLBACK_TARGETS


@dataclass(frozen=True)
class ResolvedTargets:
    """The LoRA target modules in effect for one model type, and where they came from."""

    model_type: str
    target_modules: tuple[str, ...] | str  # names, or ALL_LINEAR
    source: TargetSource

    def for_config(self) -> list[str] | str:
        """The value for `LoraConfig.target_modules` / `LoraSpec.target_modules`."""
        targets = self.target_modules
        return targets if isinstance(targets, str) else list(targets)

    def note(self) -> str | None:
        """A sentence for the estimate's notes when the request left the choice to tunecost."""
        if self.source is TargetSource.PEFT_DEFAULT:
            return (
                f"LoRA targets: peft's default for model_type {self.model_type!r} "
                f"({', '.join(self.target_modules)}); set lora.target_modules to choose others, "
                f"or {ALL_LINEAR!r} for every linear layer"
            )
        if self.source is TargetSource.FALLBACK:
            return (
                f"LoRA targets: peft has no default for model_type {self.model_type!r}, so "
                f"tunecost uses {FALLBACK_TARGETS!r} (every linear layer but the output layer); "
                "set lora.target_modules to a list of module names to adapt fewer"
            )
        return None


@lru_cache(maxsize=256)
def peft_default_targets(model_type: str) -> tuple[str, ...] | str | None:
    """peft's default LoRA target modules for `model_type`, or None where peft has none."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    found = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if found is None:
        return None
    # peft keeps a string as it is (a regex or all-linear) and turns a list into a set
    return found if isinstance(found, str) else tuple(dict.fromkeys(found))


def resolve_lora_targets(*, model_type: str, requested: Sequence[str] | str) -> ResolvedTargets:
    """The target modules LoRA uses for `model_type` when `requested` (AUTO resolves per type)."""
    if requested != AUTO:
        given = requested if isinstance(requested, str) else tuple(requested)
        return ResolvedTargets(model_type, given, TargetSource.REQUESTED)
    default = peft_default_targets(model_type)
    if default is None:
        return ResolvedTargets(model_type, FALLBACK_TARGETS, TargetSource.FALLBACK)
    return ResolvedTargets(model_type, default, TargetSource.PEFT_DEFAULT)
