"""A symbolic autograd tape: replays a forward pass on per-token tensor sizes and records what
PyTorch autograd saves for backward, with autograd's own rules (an op saves an input only when
the gradient of the *other* input needs it) and storage sharing (a saved view keeps its base).

Sizes are "elements per token" so the same tape serves any micro-batch and sequence length;
attention score matrices are H x S elements per token (one row of S scores per head).
"""

from __future__ import annotations

from dataclasses import dataclass, field

INDEX_BYTES = 8  # int64 indices (token ids, labels, routing indices)
FP32 = 4
BOOL = 1  # CUDA native_dropout saves a bool mask


@dataclass(eq=False)
class Sym:
    """A symbolic tensor: elements per token, bytes per element, requires_grad, storage base."""

    numel: float
    nbytes: int
    grad: bool
    base: Sym | None = None

    @property
    def storage(self) -> Sym:
        """The tensor that owns the storage (itself unless a view)."""
        return self.base if self.base is not None else self


@dataclass
class Tape:
    """Records saved tensors of one forward pass; `autocast` is the compute dtype size or None."""

    autocast: int | None = None
    cpu: bool = False
    saved: dict[int, Sym] = field(default_factory=dict)
    held: dict[int, Sym] = field(default_factory=dict)  # kept as autograd.Function ctx attributes

    # --- bookkeeping -----------------------------------------------------------------------
    def new(self, numel: float, nbytes: int, grad: bool) -> Sym:
        """A fresh tensor (its own storage)."""
        return Sym(numel, nbytes, grad)

    def view(self, t: Sym, numel: float) -> Sym:
        """A view of part of `t` (shares its storage)."""
        return Sym(numel, t.nbytes, t.grad, base=t.storage)

    def save(self, t: Sym, when: bool = True) -> None:
        """Autograd keeps `t` (its whole storage) for backward."""
        if when:
            self.saved[id(t.storage)] = t.storage

    def hold(self, t: Sym) -> None:
        """A custom autograd.Function keeps `t` as a ctx attribute: saved for backward, and alive
        as long as the graph object is, even after backward."""
        self.save(t)
        self.held[id(t.storage)] = t.storage

    def held_bytes_per_token(self) -> float:
        """Bytes per token of the storages held as ctx attributes, each once."""
        return sum(t.numel * t.nbytes for t in self.held.values())

    def bytes_per_token(self) -> float:
        """Total saved bytes per token, each storage once."""
        return sum(t.numel * t.nbytes for t in self.saved.values())

    # --- ops ---------------------------------------------------------------------------------
    def to(self, x: Sym, nbytes: int) -> Sym:
        """dtype cast: a no-op when the dtype matches; `ToCopyBackward` saves nothing."""
        return x if x.nbytes == nbytes else self.new(x.numel, nbytes, x.grad)

    def linear(
        self,
        x: Sym,
        out: float,
        *,
        trainable: bool,
        out_bytes: int | None = None,
        autocast: bool = True,
    ) -> Sym:
        """y = x W^T: saves x only if W needs a gradient (W itself is a parameter, not counted).
        `autocast=False` for ops autocast does not cover (grouped_mm of MoE experts)."""
        if self.autocast is not None and autocast:
            x = self.to(x, self.autocast)  # autocast casts activations anew at every call
        self.save(x, trainable)
        return self.new(out, out_bytes or x.nbytes, x.grad or trainable)

    def mul(self, a: Sym, b: Sym, nbytes: int | None = None) -> Sym:
        """a * b (elementwise): saves b for a's gradient and a for b's."""
        self.save(b, a.grad)
        self.save(a, b.grad)
        return self.new(max(a.numel, b.numel), nbytes or max(a.nbytes, b.nbytes), a.grad or b.grad)

    def scale_by_param(self, x: Sym, *, trainable: bool, nbytes: int | None = None) -> Sym:
        """x * w with w a parameter vector (norm weights): saves x only if w is trained."""
        self.save(x, trainable)
        return self.new(x.numel, nbytes or x.nbytes, x.grad or trainable)

    def pointwise(self, x: Sym, nbytes: int | None = None) -> Sym:
        """Scalar multiply/add, add of two tensors, cat, neg: nothing saved, new storage."""
        return self.new(x.numel, nbytes or x.nbytes, x.grad)

    def add(self, a: Sym, b: Sym) -> Sym:
        """a + b: nothing saved."""
        return self.new(max(a.numel, b.numel), max(a.nbytes, b.nbytes), a.grad or b.grad)

    def saves_input(self, x: Sym, nbytes: int | None = None) -> Sym:
        """silu, gelu, relu-free activations, pow: backward needs the input."""
        self.save(x, x.grad)
        return self.new(x.numel, nbytes or x.nbytes, x.grad)

    def saves_output(self, x: Sym, nbytes: int | None = None) -> Sym:
        """tanh, sigmoid, softmax, log_softmax, rsqrt: backward needs the output."""
        out = self.new(x.numel, nbytes or x.nbytes, x.grad)
        self.save(out, x.grad)
        return out

    def dropout(self, x: Sym, p: float) -> Sym:
        """Training dropout: CUDA saves a bool mask; CPU's composite path saves the scaled noise
        tensor in the input's dtype. p == 0 is the identity (peft uses nn.Identity)."""
        if p <= 0:
            return x
        if x.grad:
            self.save(self.new(x.numel, x.nbytes if self.cpu else BOOL, False))
        return self.new(x.numel, x.nbytes, x.grad)
