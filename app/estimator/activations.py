"""Activation memory: what autograd keeps between forward and backward, replayed layer by layer.

The forward pass of the model's family (`architectures.ArchProfile`) is replayed on a symbolic
tape (`tape.Tape`) with the run's dtypes, trainable set, attention kernel and LoRA adapters.
The count equals what `torch.autograd.graph.saved_tensors_hooks` sees (de-duplicated by
storage) on a real model; tests check that on CPU. Differences between CUDA and CPU kernels are
explicit (`device`): CUDA dropout saves a 1-byte mask, CPU's a tensor in the input dtype.

Not counted here: weights (and their autocast copies), gradients and optimizer state
(`memory.py`), and the logits transients of the backward pass (`logits_backward_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from app.estimator.architectures import ArchProfile, arch_profile
from app.estimator.conventions import (
    ADAPTERS_FP32,
    DTYPE_BYTES,
    adapter_dtype,
    base_dtype,
    half_dtype,
)
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import Method
from app.estimator.tape import FP32, INDEX_BYTES, Sym, Tape

Device = Literal["cuda", "cpu"]
ROUTING_INDEX_TENSORS = 3  # MoE: token index, top-k position and index_add index per routed copy


@dataclass(frozen=True)
class DtypePolicy:
    """Bytes per element of each kind of tensor in a run."""

    residual: int  # hidden states between layers (the dtype the embeddings produce)
    compute: int  # matmul outputs
    adapter: int  # LoRA A/B weights (peft computes the adapter path in their dtype)
    autocast: int | None  # torch.autocast dtype size, or None when autocast is off
    norm_weight: int  # dtype of norm weights (decides the dtype of norm outputs)


@dataclass(frozen=True)
class LoraLayout:
    """Which module leaf names get adapters, with the adapter's rank and dropout."""

    targets: frozenset[str] = frozenset()
    r: int = 0
    dropout: float = 0.0
    saved_modules: frozenset[str] = frozenset()  # modules_to_save: trained in full


@dataclass(frozen=True)
class ActivationEstimate:
    """Activation bytes of one micro-batch, all ints."""

    saved_bytes: int  # autograd-saved at the end of forward (GC: checkpoint inputs instead)
    layer_bytes: int  # what one layer saves (GC recomputes this during backward)
    logits_bytes: int  # the logits tensor the caller holds (not autograd-saved)
    loss_saved_bytes: int  # part of saved_bytes: fp32 log-softmax output, labels, softcap
    held_bytes: int  # part of saved_bytes kept as ctx attributes (bnb < 0.43.2 4-bit inputs)
    logits_backward_bytes: int  # transient at the loss backward: fp32 grads of the log-softmax
    checkpointed: bool


@dataclass(frozen=True)
class _Dims:
    h: int
    q: int
    kv: int
    heads: int
    inter: int
    seq: int
    experts_k: int
    experts: int
    expert_inter: int
    shared_inter: int


@dataclass(frozen=True)
class _Run:
    dims: _Dims
    profile: ArchProfile
    policy: DtypePolicy
    lora: LoraLayout
    full: bool
    kernel: str
    padded: bool
    cpu: bool
    quantized_keeps_input: bool = False  # bitsandbytes < 0.43.2 kept each 4-bit matmul's input


def _proj(t: Tape, x: Sym, out: float, name: str, run: _Run) -> Sym:
    pol, lora = run.policy, run.lora
    y = t.linear(
        x, out, trainable=run.full or name in lora.saved_modules, out_bytes=pol.autocast or x.nbytes
    )
    if run.quantized_keeps_input and x.grad:  # bnb < 0.43.2: `ctx.tensors = (A, B)`
        t.hold(x)
    if name not in lora.targets:
        return y
    xa = t.to(x, pol.adapter)  # peft casts the input to the adapter dtype
    a = t.linear(t.dropout(xa, lora.dropout), lora.r, trainable=True)
    b = t.linear(a, out, trainable=True)
    return t.to(t.add(y, t.pointwise(b)), y.nbytes)  # result + B(A(x)) * scaling, cast back


def _norm(t: Tape, x: Sym, run: _Run) -> Sym:
    p, pol, trainable = run.profile, run.policy, run.full
    out_bytes = max(pol.norm_weight, x.nbytes)
    if p.norm == "layernorm":
        cuda_autocast = pol.autocast is not None and not run.cpu  # CUDA autocast: fp32 op
        xi = t.to(x, FP32) if cuda_autocast else x
        if xi.grad or trainable:
            t.save(xi)
            t.save(t.new(2, xi.nbytes if run.cpu else FP32, False))  # mean, rstd per token
        return t.new(x.numel, FP32 if cuda_autocast else out_bytes, xi.grad or trainable)
    x32 = t.to(x, FP32)
    t.saves_input(x32)  # pow(2)
    r = t.saves_output(t.new(1, FP32, x32.grad))  # rsqrt(mean + eps), one per token
    if p.norm == "rms_t5":
        y = t.to(t.mul(x, r), min(pol.norm_weight, FP32))
        return t.scale_by_param(y, trainable=trainable, nbytes=out_bytes)
    y = t.mul(x32, r)
    if p.norm == "rms_gemma":  # (x * rsqrt) * (1 + w) in fp32, then back to the input dtype
        return t.to(t.scale_by_param(y, trainable=trainable, nbytes=FP32), x.nbytes)
    return t.scale_by_param(t.to(y, x.nbytes), trainable=trainable, nbytes=out_bytes)


def _attention(t: Tape, n: Sym, run: _Run, kv_src: Sym | None = None) -> Sym:
    p, d, pol = run.profile, run.dims, run.policy
    if p.fused_qkv:
        qkv = _proj(t, n, d.q + 2 * d.kv, p.fused_qkv, run)
        q, k, v = t.view(qkv, d.q), t.view(qkv, d.kv), t.view(qkv, d.kv)
    else:
        src = kv_src if kv_src is not None else n
        q = _proj(t, n, d.q, p.q, run)
        k, v = _proj(t, src, d.kv, p.k, run), _proj(t, src, d.kv, p.v, run)
    if p.rotary:  # q*cos + rotate_half(q)*sin: saves only cos/sin (shared, counted once)
        q = t.pointwise(q, max(q.nbytes, pol.residual))
        k = t.pointwise(k, max(k.nbytes, pol.residual))
    if pol.autocast:
        q, k, v = t.to(q, pol.autocast), t.to(k, pol.autocast), t.to(v, pol.autocast)
    grad = q.grad or k.grad or v.grad
    gqa = d.kv < d.q
    if run.kernel == "eager" or p.norm == "rms_t5":  # T5's position bias materialises scores
        # matmul reshapes q, k^T and v to 3-D: strided views (and repeat_kv) become copies
        q = t.new(d.q, q.nbytes, q.grad)
        k = t.new(d.q if gqa else d.kv, k.nbytes, k.grad)
        v = t.new(d.q if gqa else d.kv, v.nbytes, v.grad)
        t.save(q, k.grad)
        t.save(k, q.grad)
        s = t.pointwise(t.new(d.heads * d.seq, q.nbytes, grad))  # q k^T, then * scaling
        if p.attn_softcap:
            s = t.pointwise(t.saves_output(t.pointwise(s)))  # / cap, tanh, * cap
        softmax_bytes = FP32 if p.softmax_fp32 else q.nbytes
        probs = t.to(t.saves_output(t.pointwise(s), softmax_bytes), q.nbytes)  # + mask, softmax
        probs = t.dropout(probs, p.attn_dropout)
        t.save(probs, v.grad)
        t.save(v, probs.grad)
        out = t.pointwise(t.new(d.q, q.nbytes, grad))  # probs @ v, transpose().contiguous()
    else:
        if gqa and run.kernel == "sdpa" and run.padded:  # a mask disables enable_gqa
            k, v = t.new(d.q, k.nbytes, k.grad), t.new(d.q, v.nbytes, v.grad)
        out = t.new(d.q, q.nbytes, grad)
        if grad:
            for saved in (q, k, v, out, t.new(d.heads, FP32, False)):  # + logsumexp
                t.save(saved)
        # CUDA kernels lay the output out as (b, s, h, d), so the reshape for o_proj is a view;
        # the CPU kernel follows q's layout, which a rotary `cat` made (b, h, s, d): a copy
        out = t.pointwise(out) if run.cpu and p.rotary_cat else t.view(out, d.q)
    return _proj(t, out, d.h, p.o, run)


def _mlp(t: Tape, n: Sym, run: _Run) -> Sym:
    p, d = run.profile, run.dims
    if p.mlp == "moe":
        return _moe(t, n, run)
    if p.mlp == "gated_fused":
        gu = _proj(t, n, 2 * d.inter, p.fused_gate_up, run)
        g, u = t.view(gu, d.inter), t.view(gu, d.inter)
        m = t.mul(u, t.saves_input(g))
    elif p.mlp in ("gated", "gated_gelu_python"):
        g, u = _proj(t, n, d.inter, p.gate, run), _proj(t, n, d.inter, p.up, run)
        m = t.mul(_gelu_python(t, g) if p.mlp == "gated_gelu_python" else t.saves_input(g), u)
    else:
        u = _proj(t, n, d.inter, p.up, run)
        if p.mlp == "gelu_python":
            m = _gelu_python(t, u)
        elif p.mlp == "relu":
            m = t.saves_output(u)
        else:
            m = t.saves_input(u)
    m = t.dropout(m, p.mlp_dropout)
    return _proj(t, m, d.h, p.down, run)


def _gelu_python(t: Tape, x: Sym) -> Sym:
    """0.5 * x * (1 + tanh(c * (x + 0.044715 * x**3))) as transformers writes it."""
    half = t.pointwise(x)
    t.saves_input(x)  # pow(x, 3)
    th = t.saves_output(t.pointwise(x))  # tanh
    return t.mul(half, t.pointwise(th))


def _moe(t: Tape, n: Sym, run: _Run) -> Sym:
    """Routed experts as transformers loops over them: gather, gate_up, act, down, weight."""
    d, full = run.dims, run.full
    k = d.experts_k
    logits = t.linear(n, d.experts, trainable=full)  # router
    probs = t.saves_output(t.to(logits, FP32))  # softmax in fp32
    t.save(t.new(k, INDEX_BYTES, False))  # top-k indices
    weights = t.new(k, FP32, probs.grad)
    cur = t.new(k * d.h, n.nbytes, n.grad)  # hidden_states[token_idx]
    # experts run through torch._grouped_mm, which autocast leaves in the input dtype
    gu = t.linear(cur, k * 2 * d.expert_inter, trainable=full, autocast=False)
    act = t.saves_input(t.view(gu, k * d.expert_inter))
    mid = t.mul(act, t.view(gu, k * d.expert_inter))
    down = t.linear(mid, k * d.h, trainable=full, autocast=False)
    t.mul(down, weights)
    t.save(t.new(ROUTING_INDEX_TENSORS * k, INDEX_BYTES, False))
    out = t.new(d.h, n.nbytes, n.grad or full)
    if run.profile.shared_expert:
        dense = replace(d, inter=d.shared_inter)
        shared = _mlp(t, n, replace(run, dims=dense, profile=ArchProfile()))
        gate = t.saves_output(t.linear(n, 1, trainable=full))  # sigmoid(shared_expert_gate)
        out = t.add(out, t.mul(gate, shared))
    return out


def _layer(t: Tape, x: Sym, run: _Run, cross: Sym | None = None) -> Sym:
    p = run.profile
    n = _norm(t, x, run)
    a = t.dropout(_attention(t, n, run), p.resid_dropout)
    if p.sandwich_norms:
        a = _norm(t, a, run)
    if p.parallel_residual:
        m = _mlp(t, _norm(t, x, run), run)
        return t.add(t.add(x, a), t.dropout(m, p.resid_dropout))
    x = t.add(x, a)
    if cross is not None:  # T5 decoder: cross-attention on the encoder output
        c = _attention(t, _norm(t, x, run), run, kv_src=cross)
        x = t.add(x, t.dropout(c, p.resid_dropout))
    m = _mlp(t, _norm(t, x, run), run)
    if p.sandwich_norms:
        m = _norm(t, m, run)
    return t.add(x, t.dropout(m, p.resid_dropout))


def _layer_tape(run: _Run, *, input_grad: bool) -> Tape:
    t = Tape(autocast=run.policy.autocast, cpu=run.cpu)
    _layer(t, t.new(run.dims.h, run.policy.residual, input_grad), run)
    return t


def _layer_bytes(run: _Run, *, input_grad: bool) -> float:
    return _layer_tape(run, input_grad=input_grad).bytes_per_token()


def _decoder_stack(run: _Run, layers: int, x: Sym) -> tuple[float, float, Sym]:
    """Bytes per token of all layers (the first on its own: its input may need no grad), and
    the part of it held as ctx attributes."""
    first = _layer_tape(run, input_grad=x.grad)
    rest = _layer_tape(run, input_grad=True) if layers > 1 else Tape()
    grad = x.grad or run.full or bool(run.lora.targets)
    saved = first.bytes_per_token() + (layers - 1) * rest.bytes_per_token()
    held = first.held_bytes_per_token() + (layers - 1) * rest.held_bytes_per_token()
    return saved, held, Sym(run.dims.h, run.policy.residual, grad)


def _seq2seq_stack(t: Tape, run: _Run, enc_layers: int, dec_layers: int, x: Sym) -> Sym:
    """T5: encoder then decoder with cross-attention, on one tape (the decoder layers share the
    encoder output). Encoder and decoder lengths are both taken as the sequence length."""
    for _ in range(enc_layers):
        x = _layer(t, x, run)
    enc = _norm(t, x, run)
    y = t.dropout(t.new(run.dims.h, run.policy.residual, run.full), run.profile.embd_dropout)
    for _ in range(dec_layers):
        y = _layer(t, y, run, cross=enc)
    return y


# The memory model asks once per (GPU count, strategy) of every plan with the same inputs.
@lru_cache(maxsize=1024)
def estimate_activations(
    *,
    analysis: ModelAnalysis,
    policy: DtypePolicy,
    lora: LoraLayout,
    full: bool,
    attention: str,
    gradient_checkpointing: bool,
    micro_batch_size: int,
    seq_len: int,
    padded: bool,
    device: Device = "cuda",
    quantized_keeps_input: bool = False,
) -> ActivationEstimate:
    """Saved activations of one micro-batch of `micro_batch_size` x `seq_len` tokens."""
    p = arch_profile(analysis)
    d = _Dims(
        h=analysis.hidden_size,
        q=analysis.num_attention_heads * analysis.head_dim,
        kv=analysis.num_kv_heads * analysis.head_dim,
        heads=analysis.num_attention_heads,
        inter=analysis.intermediate_size,
        seq=seq_len,
        experts_k=analysis.experts_per_token,
        experts=analysis.num_experts,
        expert_inter=analysis.moe_intermediate_size,
        shared_inter=analysis.shared_expert_intermediate_size,
    )
    run = _Run(
        d,
        p,
        policy,
        lora,
        full,
        attention,
        padded and attention != "flash_attention_2",
        device == "cpu",
        quantized_keeps_input,
    )
    tokens = micro_batch_size * seq_len
    t = Tape(autocast=policy.autocast, cpu=run.cpu)
    emb_trainable = full or bool(lora.saved_modules & _EMBEDDING_NAMES)
    t.save(t.new(1, INDEX_BYTES, False), emb_trainable)  # token ids, for the embedding grad
    if p.position_embeddings:
        t.save(t.new(1 / micro_batch_size, INDEX_BYTES, False), emb_trainable)
    # with checkpointing, transformers makes the embedding output require grad (peft models)
    x = t.new(d.h, policy.residual, emb_trainable or gradient_checkpointing)
    x = t.dropout(x, p.embd_dropout)
    if p.rotary:  # cos and sin, (1, S, head_dim) each, shared by every layer and sequence
        rotary_dim = analysis.head_dim * p.rotary_fraction
        t.save(t.new(2 * rotary_dim / micro_batch_size, policy.residual, False))
    if run.padded and attention == "sdpa":  # (B, 1, S, S) bool mask kept by the kernel
        t.save(t.new(seq_len, 1, False))
    layers = analysis.num_layers
    stack: float
    held = 0.0
    dec_layers = analysis.num_decoder_layers if analysis.is_encoder_decoder else 0
    layer = _layer_bytes(run, input_grad=True)
    if gradient_checkpointing:  # each checkpointed layer keeps only its input hidden states
        stack = (layers + dec_layers) * d.h * policy.residual
        x = Sym(d.h, policy.residual, True)
    elif analysis.is_encoder_decoder:
        sub = Tape(autocast=policy.autocast, cpu=run.cpu)
        x = _seq2seq_stack(sub, run, layers, dec_layers, x)
        stack = sub.bytes_per_token()
    else:
        stack, held, x = _decoder_stack(run, layers, x)
    t.save(t.new(stack, 1, False))  # the layers' saved bytes, as one block
    head_trainable = full or "lm_head" in lora.saved_modules
    n = _norm(t, x, run)
    logits = t.linear(
        n, analysis.vocab_size, trainable=head_trainable, out_bytes=policy.autocast or n.nbytes
    )
    before_loss = t.bytes_per_token()
    if p.final_softcap:
        logits = t.pointwise(t.saves_output(t.pointwise(logits)))  # / cap, tanh, * cap
    t.saves_output(t.to(logits, FP32))  # log_softmax of the fp32 upcast
    t.save(t.new(1, INDEX_BYTES, False))  # labels, kept by nll_loss
    loss_saved = t.bytes_per_token() - before_loss
    return ActivationEstimate(
        saved_bytes=round(t.bytes_per_token() * tokens),
        layer_bytes=round(layer * tokens),
        logits_bytes=round(analysis.vocab_size * logits.nbytes * tokens),
        loss_saved_bytes=round(loss_saved * tokens),
        held_bytes=round(held * tokens),
        logits_backward_bytes=round(2 * analysis.vocab_size * FP32 * tokens),
        checkpointed=gradient_checkpointing,
    )


_EMBEDDING_NAMES = frozenset({"embed_tokens", "wte", "shared", "embed_in"})


def dtype_policy(*, full: bool, precision: str, adapters_fp32: bool = ADAPTERS_FP32) -> DtypePolicy:
    """Tensor dtypes of a run, by `conventions`.

    fp32: everything fp32. bf16_true: weights and activations in bf16, no autocast; LoRA
    adapters fp32 (peft casts their input up). *_mixed: torch.autocast to 16 bits with fp32
    trainable weights: full fine-tuning keeps the whole model in fp32 (so the residual stream
    and norms are fp32), LoRA/QLoRA keep the frozen base in 16 bits and the adapters in fp32.
    """
    method = Method.FULL if full else Method.LORA
    base = DTYPE_BYTES[base_dtype(method=method, precision=precision)]
    adapter = DTYPE_BYTES[adapter_dtype(precision=precision, adapters_fp32=adapters_fp32)]
    autocast = DTYPE_BYTES[half_dtype(precision)] if precision.endswith("_mixed") else None
    compute = DTYPE_BYTES[half_dtype(precision)]
    return DtypePolicy(
        residual=base, compute=compute, adapter=adapter, autocast=autocast, norm_weight=base
    )
