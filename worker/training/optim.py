"""The optimizer a job asks for, and its learning-rate schedule.

bitsandbytes' 8-bit AdamW runs on CUDA and, since bitsandbytes 0.49, on the CPU (its blockwise
8-bit states are the same tensors there, which is how the tests count them). Paged optimizers
keep their states in CUDA unified memory that the driver may evict to host memory; a CPU device
has nothing to page to, so there the same optimizer runs unpaged (bitsandbytes would fall back
to it with a warning).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from app.jobs.spec import LrSchedule
from worker.training.errors import JobSpecError

BITSANDBYTES = frozenset({"adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"})
OPTIMIZERS = frozenset({"adamw", "sgd", "adafactor"}) | BITSANDBYTES
UNPAGED = {"paged_adamw_8bit": "adamw_8bit", "paged_adamw_32bit": "adamw_32bit"}


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    device_type: str,
) -> torch.optim.Optimizer:
    """The optimizer `name` over the trainable `params`."""
    if name not in OPTIMIZERS:
        raise JobSpecError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise JobSpecError("the model has no trainable parameters")
    if name == "adamw":
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # An explicit learning rate: the relative-step schedule would ignore the job's.
        return Adafactor(
            trainable,
            lr=lr,
            weight_decay=weight_decay,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
        )
    if device_type != "cuda":
        name = UNPAGED.get(name, name)
    return _bnb_optimizer(name, trainable, lr=lr, weight_decay=weight_decay)


def _bnb_optimizer(
    name: str, params: list[torch.nn.Parameter], *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    cls: Any = {
        "adamw_8bit": bnb.optim.AdamW8bit,
        "adamw_32bit": bnb.optim.AdamW32bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }[name]
    optimizer: torch.optim.Optimizer = cls(params, lr=lr, weight_decay=weight_decay)
    return optimizer


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    schedule: LrSchedule = "constant",
    total_steps: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then the learning rate constant, or decaying to zero
    at `total_steps` (linearly, or along a half cosine).

    Constant is the default: a run may be stopped by its budget at any step, and a decay tied
    to a planned length would make a stopped run's last steps differ from a finished one's. A
    decay ends a run on a quiet iterate, so runs of different lengths (a study's pilots on
    fractions of the data, each its own complete run) are compared at their settled losses.
    """
    if schedule != "constant" and total_steps is None:
        raise ValueError(f"a {schedule} schedule needs total_steps")
    decay_steps = max((total_steps or 0) - warmup_steps, 1)

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        left = max(0.0, 1.0 - (step - warmup_steps) / decay_steps)
        return left if schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * left))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
