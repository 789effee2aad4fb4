"""A budget on what one meta-device build of a model may create: modules and tensor elements.

A config is judged by the model it would build, whatever its keys are called (`n_layers`,
`encoder_layers`, `num_experts`...): every module, parameter and buffer a build registers is
counted as it is created, and the build stops with `ModelTooLarge` the moment it passes the
budget. On the meta device a module costs ~0.2 ms of Python and a tensor nothing, so the module
count is what bounds the time of a build, and the element count what bounds the model itself.
A stack built at reduced depth and expanded (`model_analysis`) is checked by arithmetic first.

One cost comes before any build: some transformers configs do per-layer work in their own
constructor (Qwen2 and Gemma 2 fill `layer_types`, ~6 s for a million layers). Every layer is
at least one module, so a layer count past the module budget is refused before the config is
made; which key holds the layer count is transformers' own answer (the config class's
`attribute_map` for `num_hidden_layers`), for the config and each of its sub-configs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from app.estimator.errors import EstimateInputError

# Modules of one model: Llama-3.1-405B, the deepest public model (126 layers), has 1,645; the
# largest full build of the catalog (Gemma-2-27B) 697. 3072 (~236 Llama-style layers) leaves
# ~1.9x headroom and stops a runaway build within ~1 s: a module costs 0.2-0.35 ms on the meta
# device (measured: BART, MPT and T5 stacks, torch 2.13, transformers 5.24).
MAX_MODULES = 3072
# Parameter and buffer elements of one model: ~25x the largest public model (405B).
MAX_ELEMENTS = 10_000_000_000_000

_local = threading.local()
_hooks_lock = threading.Lock()
_hooks_installed = False


class ModelTooLarge(EstimateInputError):
    """A config whose model passes the build budget."""

    def __init__(self, model_type: str | None, detail: str) -> None:
        super().__init__(
            f"model_type={model_type!r}: {detail}", field="model", model_type=model_type
        )
        self.model_type = model_type
        self.detail = detail


class _Tally:
    """What the build in progress on this thread has created so far."""

    def __init__(self, model_type: str | None) -> None:
        self.model_type = model_type
        self.modules = 1  # the root
        self.elements = 0

    def add_module(self) -> None:
        self.modules += 1
        if self.modules > MAX_MODULES:
            raise too_many_modules(self.model_type, f"more than {self.modules - 1}")

    def add_elements(self, n: int) -> None:
        self.elements += n
        if self.elements > MAX_ELEMENTS:
            raise too_many_elements(self.model_type, f"more than {self.elements:.3g}")


def too_many_modules(model_type: str | None, count: str) -> ModelTooLarge:
    """The refusal of a model with `count` modules."""
    return ModelTooLarge(
        model_type,
        f"the model would have {count} modules (layers, attention blocks, projections); "
        f"tunecost builds at most {MAX_MODULES}: fewer layers or experts",
    )


def too_many_elements(model_type: str | None, count: str) -> ModelTooLarge:
    """The refusal of a model with `count` parameter and buffer elements."""
    return ModelTooLarge(
        model_type,
        f"the model would hold {count} parameter and buffer elements; tunecost accepts at "
        f"most {MAX_ELEMENTS:.0e}: smaller sizes (hidden, vocabulary, experts)",
    )


def check_size(model_type: str | None, *, modules: int, elements: int) -> None:
    """Refuse a model whose counted size passes the budget (for counts made by arithmetic)."""
    if modules > MAX_MODULES:
        raise too_many_modules(model_type, f"{modules}")
    if elements > MAX_ELEMENTS:
        raise too_many_elements(model_type, f"{elements:.3g}")


@contextmanager
def budgeted(model_type: str | None) -> Iterator[None]:
    """Count what builds on this thread create within the block; ModelTooLarge past the budget."""
    _install_hooks()
    previous = getattr(_local, "tally", None)
    _local.tally = _Tally(model_type)
    try:
        yield
    finally:
        _local.tally = previous


def _install_hooks() -> None:
    """torch's global registration hooks, once per process; they count only inside `budgeted`."""
    global _hooks_installed
    if _hooks_installed:
        return
    with _hooks_lock:
        if _hooks_installed:
            return
        from torch.nn.modules import module

        module.register_module_module_registration_hook(_on_module)
        module.register_module_parameter_registration_hook(_on_tensor)
        module.register_module_buffer_registration_hook(_on_tensor)
        _hooks_installed = True


def _on_module(_parent: Any, _name: str, child: Any) -> None:
    tally: _Tally | None = getattr(_local, "tally", None)
    if tally is not None and child is not None:
        tally.add_module()


def _on_tensor(_module: Any, _name: str, tensor: Any) -> None:
    tally: _Tally | None = getattr(_local, "tally", None)
    if tally is not None and tensor is not None:
        tally.add_elements(int(tensor.numel()))


def check_layer_count(model_type: str, config: Mapping[str, Any]) -> None:
    """Refuse a config whose layer count alone passes the module budget, before transformers
    makes the config (see the module docstring); an unknown model_type is left to transformers."""
    from transformers import CONFIG_MAPPING

    if model_type in CONFIG_MAPPING:
        _check_layers(CONFIG_MAPPING[model_type], config, model_type)


def _check_layers(config_class: Any, config: Mapping[str, Any], model_type: str) -> None:
    from transformers import CONFIG_MAPPING, AutoConfig

    key = getattr(config_class, "attribute_map", {}).get("num_hidden_layers", "num_hidden_layers")
    layers = config.get(key)
    if isinstance(layers, int) and not isinstance(layers, bool) and layers > MAX_MODULES:
        raise too_many_modules(model_type, f"at least {layers} ({key})")
    for name, sub_class in (getattr(config_class, "sub_configs", None) or {}).items():
        nested = config.get(name)
        if not isinstance(nested, Mapping):
            continue
        if sub_class is AutoConfig:  # the sub-config names its own model_type
            sub_type = nested.get("model_type")
            if not isinstance(sub_type, str) or sub_type not in CONFIG_MAPPING:
                continue
            sub_class = CONFIG_MAPPING[sub_type]
        _check_layers(sub_class, nested, model_type)
