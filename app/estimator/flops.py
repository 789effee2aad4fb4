"""FLOPs per token of a fine-tune, by method, counted the way PyTorch's FLOP counter counts.

Matmuls only, 2 FLOPs per multiply-add, as `torch.utils.flop_counter` does. For a linear layer
with N weights a token costs 2N forward, 2N for the input gradient and 2N for the weight
gradient (Kaplan et al. 2020, "Scaling Laws", section 2.1: C = 6N per token). Frozen layers
(LoRA, QLoRA) skip the weight gradient: 4N, plus the adapter's own 6 x its weights. Attention's
score and value products add 4·c·d_attn per token and layer forward (c = context length,
d_attn = query heads x head_dim), 12 with backward (PaLM, Chowdhery et al. 2022, appendix B;
the full c x c square, as the counter does, whatever the kernel skips). MoE models count the
routed experts only. Gradient checkpointing runs each block's forward again (+2N and the
attention forward) except what an early-stopping checkpoint never needs.

Known gap: without checkpointing, autograd skips the input gradients of the first block's
projections that read the frozen embeddings; the estimate charges them (under 1/L of a block).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.estimator.lora import lora_targets
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import LoraSpec, Method, TrainingSpec

OUTPUT_LAYERS = frozenset({"lm_head", "embed_out"})  # output projections in transformers
# The last projection of each block's MLP, by the names transformers gives it (Llama family
# down_proj, GPT-2 mlp.c_proj, OPT/Phi fc2, GPT-NeoX dense_4h_to_h, T5 wo, Mixtral-style w2).
BLOCK_OUTPUT_LAYERS = frozenset({"down_proj", "fc2", "dense_4h_to_h", "wo", "w2"})
ROUTER_LAYERS = frozenset({"gate", "router", "shared_expert_gate"})  # MoE routing projections
FUSED_EXPERT_OUTPUT_SHARE = 1 / 3  # gated experts: gate, up and down projections of equal size


@dataclass(frozen=True)
class MatmulParams:
    """Weights that take part in matmuls (each costs 2 FLOPs per token forward)."""

    total: int  # every linear weight and expert, LM head included even when tied
    active: int  # per token: MoE models run only the routed experts
    lm_head: int  # the output projection (vocab x hidden)
    quantizable: int  # what 4-bit quantization replaces: all of `total` but the LM head
    block_output: int  # active weights of each block's last MLP projection (see recompute)
    attention_width: int  # query heads x head dim: the width of the score/value products


_MATMUL_CACHE: dict[str, MatmulParams] = {}


def matmul_params(analysis: ModelAnalysis) -> MatmulParams:
    """Matmul weight counts of `analysis` (cached by config hash)."""
    cached = _MATMUL_CACHE.get(analysis.config_hash)
    if cached is not None:
        return cached
    linear = expert_linear = router_linear = lm_head = block_output = 0
    for name, fan_in, fan_out in analysis.linear_layers:
        size = fan_in * fan_out
        leaf = name.rsplit(".", 1)[-1]
        linear += size
        if ".experts." in name:
            expert_linear += size
        elif leaf in ROUTER_LAYERS:
            router_linear += size
        elif leaf in OUTPUT_LAYERS:
            lm_head += size
        elif _is_block_output(name):
            block_output += size
    # MoE experts and routers kept as plain weight tensors rather than linear modules
    # (transformers 5 fuses experts into 3-D tensors) are matmul weights all the same.
    kinds = analysis.params_by_kind
    experts = max(kinds.get("experts", 0), expert_linear)
    fused = experts - expert_linear + max(0, kinds.get("router", 0) - router_linear)
    total = linear + fused
    active = total
    if analysis.num_experts:
        routed = experts * analysis.experts_per_token // analysis.num_experts
        active = total - experts + routed
        block_output += int(routed * FUSED_EXPERT_OUTPUT_SHARE)
    result = MatmulParams(
        total=total,
        active=active,
        lm_head=lm_head,
        quantizable=total - lm_head,
        block_output=block_output,
        attention_width=analysis.num_attention_heads * analysis.head_dim,
    )
    _MATMUL_CACHE[analysis.config_hash] = result
    return result


@dataclass(frozen=True)
class FlopsBreakdown:
    """Matmul FLOPs per processed token, by where they are spent."""

    forward: float  # 2 x matmul weights (LM head included)
    backward_input: float  # gradients w.r.t. activations: 2 x matmul weights
    backward_weight: float  # weight gradients of trained base layers (full only)
    attention: float  # score and value products, forward and backward
    adapter: float  # the adapter's own forward and backward: 6 x trainable (LoRA/QLoRA)
    recompute: float  # forward again under gradient checkpointing

    @property
    def total(self) -> float:
        """FLOPs actually executed per token."""
        return (
            self.forward
            + self.backward_input
            + self.backward_weight
            + self.attention
            + self.adapter
            + self.recompute
        )

    @property
    def model_flops(self) -> float:
        """FLOPs per token without recompute: the numerator of MFU in PaLM's sense."""
        return self.total - self.recompute

    def as_dict(self) -> dict[str, float]:
        """The breakdown with its totals, for JSON."""
        return {**asdict(self), "total": self.total, "model_flops": self.model_flops}


_SKIP_CACHE: dict[tuple[str, int, Any], tuple[int, int]] = {}


def _is_block_output(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in BLOCK_OUTPUT_LAYERS or name.endswith("mlp.c_proj")


def _not_recomputed(analysis: ModelAnalysis, lora: LoraSpec | None) -> tuple[int, int]:
    """Weights (base, adapter) an early-stopping checkpoint does not run again.

    The last matmul of a block is skipped. When that layer carries an adapter, peft runs the
    base matmul before the adapter, so only the adapter's B matrix is last and skipped.
    """
    mm = matmul_params(analysis)
    if lora is None:
        return mm.block_output, 0
    targets = lora.target_modules
    key = (analysis.config_hash, lora.r, targets if isinstance(targets, str) else tuple(targets))
    if key not in _SKIP_CACHE:
        adapted = {name for name, _, _ in lora_targets(analysis, lora)}
        base, adapter = mm.block_output, 0
        for name, fan_in, fan_out in analysis.linear_layers:
            if name in adapted and _is_block_output(name):
                base -= fan_in * fan_out
                adapter += lora.r * fan_out
        _SKIP_CACHE[key] = (base, adapter)
    return _SKIP_CACHE[key]


def flops_per_token(
    *,
    analysis: ModelAnalysis,
    method: Method | str,
    training: TrainingSpec,
    lora_trainable: int,
    seq_len: float,
    lora: LoraSpec | None = None,
) -> FlopsBreakdown:
    """Matmul FLOPs per token for `method`, with `seq_len` the attention context length.

    `lora` (optional) says which layers carry adapters; it only matters under gradient
    checkpointing, where an adapted block output changes what is recomputed.
    """
    method = Method(method)
    mm = matmul_params(analysis)
    n_active = float(mm.active)
    attn_fwd = 4.0 * analysis.num_layers * seq_len * mm.attention_width
    peft = method is not Method.FULL
    trainable = float(lora_trainable) if peft else 0.0
    recompute = 0.0
    if training.checkpointing:
        # HF checkpoints each decoder block: the LM head and embeddings are not run again.
        # transformers 5 uses torch's non-reentrant checkpoint, which stops recomputing once
        # every tensor backward needs exists again: each block's last MLP projection, whose
        # output nothing saves, is skipped (torch.utils.checkpoint, early_stop=True).
        base_skip, adapter_skip = _not_recomputed(analysis, lora if peft else None)
        recomputed = n_active - mm.lm_head - base_skip
        recompute = 2.0 * recomputed + attn_fwd + 2.0 * (trainable - adapter_skip)
    return FlopsBreakdown(
        forward=2.0 * n_active,
        backward_input=2.0 * n_active,
        backward_weight=0.0 if peft else 2.0 * n_active,
        attention=3.0 * attn_fwd,
        adapter=6.0 * trainable,
        recompute=recompute,
    )
