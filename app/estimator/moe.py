"""What QLoRA and LoRA do to a mixture-of-experts model, said in numbers and sentences.

bitsandbytes quantizes by replacing `nn.Linear` modules (transformers' `replace_with_bnb_linear`),
and leaves the output layer alone. Under transformers 5 the routed experts of Mixtral and the
Qwen MoE models are fused 3-D parameters of one `*Experts` module, not `nn.Linear` modules, so
QLoRA leaves them, often most of the model, in the load dtype. LoRA's `target_modules` only
wraps modules; peft adapts a fused parameter through `LoraConfig.target_parameters` instead.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from app.estimator.model_analysis import ModelAnalysis
from app.estimator.states import quantizable_layers

GB = 1e9
FUSED_EXPERT_DIMS = 3  # a fused expert tensor is (experts, out, in)
# Above this share of fused (unquantized) experts, QLoRA's 4-bit base is the smaller part of the
# model and its memory lands near LoRA's: worth saying. A round half, not a measured threshold.
MOSTLY_FUSED_SHARE = 0.5


class MoeQuantization(BaseModel):
    """Which parameters of a MoE model QLoRA quantizes, which stay unquantized, and adapters."""

    model_config = ConfigDict(frozen=True)

    num_experts: int
    experts_per_token: int
    qlora_quantized_params: int = Field(description="nn.Linear weights stored in 4 bits")
    qlora_quantized_modules: list[str] = Field(description="their module names (last part)")
    fused_expert_params: int = Field(description="routed experts as fused tensors: not quantized")
    fused_expert_parameters: list[str] = Field(
        description="their parameter names within a layer (peft target_parameters names)"
    )
    other_unquantized_params: int = Field(
        description="embeddings, norms, routers, biases and the output layer: not quantized"
    )
    experts_can_carry_adapters: bool = Field(
        description="the installed peft adapts fused expert parameters (target_parameters)"
    )
    notes: list[str]


def peft_supports_target_parameters() -> bool:
    """Whether the installed peft's LoraConfig has `target_parameters` (peft 0.17 and later)."""
    from peft import LoraConfig

    return "target_parameters" in {f.name for f in dataclasses.fields(LoraConfig)}


def _fused_expert_names(analysis: ModelAnalysis) -> list[str]:
    """Layer-relative names of the fused expert tensors (from the repeated decoder layer)."""
    if analysis.stack is None:
        return []
    return [
        p.name.lstrip(".")
        for p in analysis.stack.layer.params
        if p.kind == "experts" and len(p.shape) == FUSED_EXPERT_DIMS
    ]


@lru_cache(maxsize=256)
def moe_quantization(analysis: ModelAnalysis) -> MoeQuantization | None:
    """The QLoRA split and adapter options of a MoE model; None for a dense model."""
    if not analysis.num_experts:
        return None
    layers = quantizable_layers(analysis)
    quantized = sum(i * o for _, i, o in layers)
    # experts built as nn.Linear (older transformers) are quantized like any linear layer
    linear_experts = sum(i * o for name, i, o in layers if ".experts." in name)
    fused = analysis.params_by_kind.get("experts", 0) - linear_experts
    other = analysis.total_params - quantized - fused
    names = _fused_expert_names(analysis)
    adapters = fused > 0 and peft_supports_target_parameters()
    modules = sorted({name.rsplit(".", 1)[-1] for name, _, _ in layers})
    split = MoeQuantization(
        num_experts=analysis.num_experts,
        experts_per_token=analysis.experts_per_token,
        qlora_quantized_params=quantized,
        qlora_quantized_modules=modules,
        fused_expert_params=fused,
        fused_expert_parameters=names,
        other_unquantized_params=other,
        experts_can_carry_adapters=adapters,
        notes=[],
    )
    return split.model_copy(update={"notes": _notes(split, analysis.total_params)})


def _notes(split: MoeQuantization, total: int) -> list[str]:
    share = split.fused_expert_params / total if total else 0.0
    quantized = (
        f"MoE, QLoRA: bitsandbytes quantizes nn.Linear layers only: "
        f"{split.qlora_quantized_params / GB:.2f}B parameters "
        f"({', '.join(split.qlora_quantized_modules)}) go to 4 bits"
    )
    if split.fused_expert_params:
        names = ", ".join(split.fused_expert_parameters) or "the experts' tensors"
        quantized += (
            f"; the {split.fused_expert_params / GB:.2f}B routed-expert parameters "
            f"({share:.0%} of the model) are fused tensors ({names}) under transformers 5 and "
            f"stay 16-bit, as do {split.other_unquantized_params / GB:.2f}B others (embeddings, "
            "norms, routers, output layer)"
        )
        if share >= MOSTLY_FUSED_SHARE:
            quantized += ", so QLoRA saves little memory over LoRA here"
    else:
        quantized += (
            f"; {split.other_unquantized_params / GB:.2f}B others (embeddings, norms, routers, "
            "output layer) stay 16-bit"
        )
    notes = [quantized]
    if split.fused_expert_params:
        example = f"target_parameters={split.fused_expert_parameters!r}"
        notes.append(
            "MoE, LoRA: target_modules adapt linear layers only, never the fused experts; "
            + (
                f"the installed peft can adapt them too ({example}), which tunecost does not "
                "estimate or train yet"
                if split.experts_can_carry_adapters
                else "the installed peft cannot adapt fused expert parameters (no "
                "target_parameters)"
            )
        )
    return notes
