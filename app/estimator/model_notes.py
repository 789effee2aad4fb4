"""What an estimate says about the model itself: LoRA targets chosen for it, MoE quantization,
and whether the worker can train it."""

from __future__ import annotations

from collections.abc import Collection

from app.estimator.lora_defaults import ResolvedTargets, resolve_lora_targets
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.moe import moe_quantization
from app.estimator.results import LoraTargetsOut
from app.estimator.spec import LoraSpec, Method


def resolved_targets(analysis: ModelAnalysis, lora: LoraSpec) -> ResolvedTargets:
    """The LoRA target modules in effect for this model (`auto` resolved as peft would)."""
    return resolve_lora_targets(model_type=analysis.model_type, requested=lora.target_modules)


def lora_targets_out(analysis: ModelAnalysis, lora: LoraSpec) -> LoraTargetsOut:
    """The resolved targets as the estimate reports them."""
    resolved = resolved_targets(analysis, lora)
    return LoraTargetsOut(target_modules=resolved.for_config(), source=resolved.source)


def worker_refusal(*, model_type: str, is_encoder_decoder: bool) -> str | None:
    """Why tunecost's worker cannot train this model, or None when it can."""
    if is_encoder_decoder:
        return (
            f"model_type {model_type!r} is an encoder-decoder model: it can be estimated "
            "(with its own LoRA defaults), but tunecost's worker trains decoder-only causal "
            "language models (AutoModelForCausalLM) and refuses jobs for it"
        )
    return None


def model_notes(
    *, analysis: ModelAnalysis, methods: Collection[Method], lora: LoraSpec
) -> list[str]:
    """Sentences about the model for the estimate's notes (empty when there is nothing to say)."""
    notes: list[str] = []
    adapters = Method.LORA in methods or Method.QLORA in methods
    if adapters:
        note = resolved_targets(analysis, lora).note()
        if note:
            notes.append(note)
    moe = moe_quantization(analysis)
    if moe is not None and adapters:
        quantization, *adapter_notes = moe.notes
        notes.extend(([quantization] if Method.QLORA in methods else []) + adapter_notes)
    refusal = worker_refusal(
        model_type=analysis.model_type, is_encoder_decoder=analysis.is_encoder_decoder
    )
    if refusal:
        notes.append(refusal)
    return notes
