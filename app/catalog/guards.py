"""Cheap checks on a client's model config before transformers makes it: no remote code, no
deep nesting. How large the model may be is judged on the model itself, whatever its keys are
called: app/estimator/build_budget.py counts what its meta-device build creates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.errors import InvalidInput

MAX_NESTING = 4  # text_config / vision_config go one level down; nothing real goes deeper


def check_config(config: Mapping[str, Any], *, field: str, depth: int = 0) -> None:
    """Raise InvalidInput naming the key of remote code (`auto_map`) or of nesting too deep."""
    model_type = config.get("model_type")
    if depth == 0 and config.get("auto_map"):
        raise InvalidInput(
            f"model_type={model_type!r}: configs with 'auto_map' need remote code, which tunecost "
            "never runs; use an architecture native to transformers",
            field=f"{field}.auto_map",
            model_type=model_type,
        )
    if depth > MAX_NESTING:
        raise InvalidInput(f"the config nests deeper than {MAX_NESTING} levels", field=field)
    for key, value in config.items():
        if isinstance(value, Mapping):
            check_config(value, field=f"{field}.{key}", depth=depth + 1)
