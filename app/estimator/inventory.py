"""What a built model holds (parameters by kind, linear layers) and its repeated decoder stack.

A 70B decoder is 80 copies of one layer between an embedding and a head. The inventory of a
built model lists every parameter once (in `model.parameters()` order) and every linear layer.
When all layers of the decoder stack are alike (same names modulo the layer index, shapes,
kinds and module classes), `StackSignature` keeps the part outside the stack and one layer, and
`expand` gives the exact inventory of the same model at any depth: what a full-depth meta build
would list, without building it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

if TYPE_CHECKING:
    from torch import nn

# Substrings of module paths that mark each block; they cover the transformers naming of every
# catalog family (Llama/Mistral/Qwen2/Gemma/Phi-3 `self_attn`/`mlp`, GPT-2 `attn`, GPT-NeoX
# `attention`, T5 `SelfAttention`/`EncDecAttention`/`DenseReluDense`, MoE `experts`).
_ATTENTION_MARKS = ("attn", "attention", "selfattention", "encdecattention")
_MLP_MARKS = ("mlp", "feed_forward", "densereludense", "ffn")
_EXPERT_MARKS = ("experts",)


class ParamRecord(NamedTuple):
    """One parameter tensor, named by its first owner (tied tensors are listed once)."""

    name: str
    shape: tuple[int, ...]
    kind: str  # one of model_analysis.PARAM_KINDS
    router_weight: bool  # a 2-D weight of a MoE router that is not an nn.Linear

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Inventory:
    """Parameters, linear layers (name, in, out) and modules (path, class) in model order."""

    params: tuple[ParamRecord, ...]
    linears: tuple[tuple[str, int, int], ...]
    modules: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StackSignature:
    """A model as its decoder stack's one repeated layer plus everything outside the stack.

    Names in `layer` are relative to the layer (`""` is the layer module itself, `".mlp"` a
    child); `before` and `after` keep absolute names. Two models with equal signatures differ
    only in depth."""

    path: str  # module path of the stack's nn.ModuleList, e.g. "model.layers"
    before: Inventory
    layer: Inventory
    after: Inventory

    def size_at(self, depth: int) -> tuple[int, int]:
        """(modules, parameter elements) of this model with `depth` layers, without expanding."""
        parts = (self.before, self.after)
        modules = sum(len(p.modules) for p in parts) + depth * len(self.layer.modules)
        elements = sum(numel(p.params) for p in parts) + depth * numel(self.layer.params)
        return modules, elements

    def expand(self, depth: int) -> Inventory:
        """The inventory of this model with `depth` layers."""

        def part(pick: str) -> tuple[Any, ...]:
            head, one, tail = (getattr(inv, pick) for inv in (self.before, self.layer, self.after))
            stack = [_rename(entry, f"{self.path}.{i}") for i in range(depth) for entry in one]
            return (*head, *stack, *tail)

        return Inventory(params=part("params"), linears=part("linears"), modules=part("modules"))


def take_inventory(model: Any, *, is_moe: bool) -> Inventory:  # a PreTrainedModel
    """Every parameter (kind, shape) and linear layer of a built model, in model order."""
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    in_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight
    lm_head_ids = {id(out_emb)} if out_emb is not None and not tied else set()

    params: list[ParamRecord] = []
    linears: list[tuple[str, int, int]] = []
    modules: list[tuple[str, str]] = []
    seen: set[int] = set()
    for path, module in model.named_modules():
        modules.append((path, type(module).__name__))
        shape = linear_shape(module)
        if shape is not None:
            linears.append((path, shape[0], shape[1]))
        router = "router" in type(module).__name__.lower() and shape is None
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # a tied parameter belongs to its first owner
                continue
            seen.add(id(param))
            params.append(
                ParamRecord(
                    name=f"{path}.{pname}" if path else pname,
                    shape=tuple(int(x) for x in param.shape),
                    kind=_classify(path, module, lm_head_ids, is_moe),
                    router_weight=router and param.dim() == 2,
                )
            )
    return Inventory(params=tuple(params), linears=tuple(linears), modules=tuple(modules))


def stack_paths(model: nn.Module, depth: int) -> set[str]:
    """Paths of the nn.ModuleLists in `model` that hold exactly `depth` modules."""
    from torch import nn

    return {
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == depth
    }


def stack_signature(inventory: Inventory, path: str, depth: int) -> StackSignature | None:
    """The signature of a model whose stack at `path` has `depth` alike layers; None if the
    layers differ (names modulo index, shapes, kinds, classes) or are not laid out in order."""
    parts = [
        _split(getattr(inventory, pick), path, depth) for pick in ("params", "linears", "modules")
    ]
    if any(p is None for p in parts):
        return None
    (bp, lp, ap), (bl, ll, al), (bm, lm, am) = (p for p in parts if p is not None)
    return StackSignature(
        path=path,
        before=Inventory(params=bp, linears=bl, modules=bm),
        layer=Inventory(params=lp, linears=ll, modules=lm),
        after=Inventory(params=ap, linears=al, modules=am),
    )


_E = TypeVar("_E", bound=tuple[Any, ...])  # an inventory entry: its name comes first


def _named(entry: _E, name: str) -> _E:
    """`entry` under another name."""
    if isinstance(entry, ParamRecord):
        return cast(_E, entry._replace(name=name))
    return cast(_E, (name, *entry[1:]))


def _rename(entry: _E, prefix: str) -> _E:
    """`entry` with `prefix` put in front of its (layer-relative) name."""
    return _named(entry, prefix + entry[0])


def _split(
    entries: Sequence[_E], path: str, depth: int
) -> tuple[tuple[_E, ...], tuple[_E, ...], tuple[_E, ...]] | None:
    """(before the stack, layer 0 with relative names, after) when every layer repeats layer 0."""
    before: list[_E] = []
    after: list[_E] = []
    layers: list[list[_E]] = [[] for _ in range(depth)]
    inside = done = False
    last = -1
    for entry in entries:
        found = _layer_index(entry[0], path)
        if found is None:
            done = done or inside
            (after if done else before).append(entry)
            continue
        index, rel = found
        if done or index < last or index >= depth:
            return None  # the stack is not one contiguous block in layer order
        inside, last = True, index
        layers[index].append(_named(entry, rel))
    first = tuple(layers[0])
    if any(tuple(layer) != first for layer in layers[1:]):
        return None
    return tuple(before), first, tuple(after)


def _layer_index(name: str, path: str) -> tuple[int, str] | None:
    """(layer index, name relative to the layer) when `name` lies in the stack at `path`."""
    if not name.startswith(path + "."):
        return None
    head, _, rest = name[len(path) + 1 :].partition(".")
    if not head.isdigit():
        return None
    return int(head), ("." + rest if rest else "")


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of an nn.Linear or of a transformers Conv1D (GPT-2's transposed linear)."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        weight: Any = module.weight
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def _classify(path: str, module: nn.Module, lm_head_modules: set[int], is_moe: bool) -> str:
    from torch import nn

    low = path.lower()
    cls = type(module).__name__.lower()
    if id(module) in lm_head_modules:
        return "lm_head"
    if "norm" in cls:
        return "norms"
    if is_moe and ("router" in cls or low.endswith(".gate") or low.endswith("shared_expert_gate")):
        return "router"
    if any(mark in low for mark in _EXPERT_MARKS) or "experts" in cls:
        return "experts"
    if any(mark in low for mark in _ATTENTION_MARKS):
        return "attention"
    if isinstance(module, nn.Embedding):
        return "embeddings"
    if any(mark in low for mark in _MLP_MARKS):
        return "mlp"
    return "other"


def numel(params: Iterable[ParamRecord]) -> int:
    """Total elements of `params`."""
    return sum(p.numel for p in params)
