"""Silence two library messages that are false or not ours to act on, before anything imports them.

Imported by app/__init__.py, so the API, the CLI, the worker and its training child (which all
import `app`) start without them; every other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

# bitsandbytes (0.49, backends/cpu/ops.py) logs this at import on CPUs with AVX512-BF16 when the
# optional `kernels` package is absent, then falls back to its own CPU kernels, which is what the
# worker uses anyway. The advice to `pip install kernels` (a hub download at run time) is wrong
# here; only this one record of that logger is dropped.
BNB_CPU_OPS_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_HINT = "Failed to load CPU gemm_4bit_forward from kernels-community"

# peft (peft_model.py, mixed_model.py) reads `model.is_gradient_checkpointing`, which transformers
# 5 deprecated; the FutureWarning is about peft's code, not ours or the user's.
PEFT_DEPRECATED_PROPERTY = r"`is_gradient_checkpointing` is deprecated"


class _DropKernelsHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(BNB_KERNELS_HINT)


def silence_false_warnings() -> None:
    """Install the bitsandbytes log filter and the peft warning filter (idempotent)."""
    logger = logging.getLogger(BNB_CPU_OPS_LOGGER)
    if not any(isinstance(f, _DropKernelsHint) for f in logger.filters):
        logger.addFilter(_DropKernelsHint())
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATED_PROPERTY, category=FutureWarning)
