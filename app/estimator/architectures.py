"""How each transformer family computes one layer, as far as saved activations are concerned.

Each profile names the modules as transformers does (so LoRA target names line up) and says
which norm, attention projection layout, MLP and dropouts the family uses. An unknown decoder
family falls back to the Llama profile, which most decoders share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.estimator.model_analysis import ModelAnalysis


@dataclass(frozen=True)
class ArchProfile:
    """The parts of a family's forward pass that decide what autograd saves."""

    norm: str = "rms"  # rms | rms_gemma | rms_t5 | layernorm
    sandwich_norms: bool = False  # Gemma 2: norms after attention and after the MLP too
    fused_qkv: str | None = None  # name of the fused q/k/v projection, else separate
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    mlp: str = "gated"  # gated | gated_fused | gelu_python | gelu | relu | gated_gelu_python | moe
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    fused_gate_up: str = "gate_up_proj"
    rotary: bool = True
    rotary_fraction: float = 1.0  # share of head_dim that is rotated (GPT-NeoX rotary_pct)
    rotary_cat: bool = False  # rotary output built by `cat` (partial rotary): contiguous b,h,s,d
    parallel_residual: bool = False  # GPT-NeoX: attention and MLP read the same input
    softmax_fp32: bool = True  # eager softmax upcast to fp32 (GPT-2 keeps the input dtype)
    attn_softcap: bool = False  # Gemma 2 eager: tanh on the scores
    final_softcap: bool = False  # Gemma 2: tanh on the logits
    shared_expert: bool = False  # Qwen2-MoE: an always-on expert with a sigmoid gate
    resid_dropout: float = 0.0
    attn_dropout: float = 0.0
    embd_dropout: float = 0.0
    mlp_dropout: float = 0.0  # dropout inside the MLP (T5)
    position_embeddings: bool = False  # learned absolute positions (GPT-2)


_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "mixtral", "qwen2_moe")


def _f(config: dict[str, Any], *names: str) -> float:
    for name in names:
        value = config.get(name)
        if isinstance(value, int | float):
            return float(value)
    return 0.0


def arch_profile(analysis: ModelAnalysis) -> ArchProfile:
    """The profile of the analysed model's family (Llama's when the family is not known)."""
    cfg = dict(analysis.forward_options)
    mt = analysis.model_type
    attn_p = _f(cfg, "attention_dropout", "attn_pdrop")
    if mt == "gpt2":
        return ArchProfile(
            norm="layernorm",
            fused_qkv="c_attn",
            o="c_proj",
            mlp="gelu_python"
            if cfg.get("activation_function", "gelu_new") == "gelu_new"
            else "gelu",
            up="c_fc",
            down="c_proj",
            rotary=False,
            softmax_fp32=False,
            resid_dropout=_f(cfg, "resid_pdrop"),
            attn_dropout=_f(cfg, "attn_pdrop"),
            embd_dropout=_f(cfg, "embd_pdrop"),
            position_embeddings=True,
        )
    if mt == "gpt_neox":
        return ArchProfile(
            norm="layernorm",
            fused_qkv="query_key_value",
            o="dense",
            mlp="gelu",
            up="dense_h_to_4h",
            down="dense_4h_to_h",
            parallel_residual=bool(cfg.get("use_parallel_residual", True)),
            rotary_fraction=_f(cfg, "partial_rotary_factor", "rotary_pct") or 1.0,
            rotary_cat=True,
            resid_dropout=_f(cfg, "hidden_dropout"),
            attn_dropout=attn_p,
        )
    if mt == "t5":
        gated = str(cfg.get("feed_forward_proj", "relu")).startswith("gated")
        p = _f(cfg, "dropout_rate")
        return ArchProfile(
            norm="rms_t5",
            q="q",
            k="k",
            v="v",
            o="o",
            mlp="gated_gelu_python" if gated else "relu",
            gate="wi_0",
            up="wi_1" if gated else "wi",
            down="wo",
            rotary=False,
            resid_dropout=p,
            attn_dropout=p,
            embd_dropout=p,
            mlp_dropout=p,
        )
    if mt == "phi3":
        return ArchProfile(
            fused_qkv="qkv_proj",
            mlp="gated_fused",
            rotary_fraction=_f(cfg, "partial_rotary_factor") or 1.0,
            rotary_cat=True,
            resid_dropout=_f(cfg, "resid_pdrop"),
            embd_dropout=_f(cfg, "embd_pdrop"),
            attn_dropout=attn_p,
        )
    gemma = mt in ("gemma", "gemma2", "gemma3_text")
    return ArchProfile(
        norm="rms_gemma" if gemma else "rms",
        sandwich_norms=mt in ("gemma2", "gemma3_text"),
        mlp="moe" if analysis.num_experts else "gated",
        attn_softcap=cfg.get("attn_logit_softcapping") is not None,
        final_softcap=cfg.get("final_logit_softcapping") is not None,
        shared_expert=analysis.shared_expert_intermediate_size > 0,
        attn_dropout=attn_p,
    )


def is_known_family(model_type: str) -> bool:
    """Whether a family has a profile of its own (others use Llama's as an approximation)."""
    return model_type in (*_LLAMA_LIKE, "gpt2", "gpt_neox", "t5", "phi3")
