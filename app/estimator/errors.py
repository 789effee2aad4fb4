"""The estimator's one error for inputs it cannot estimate for.

Raised where an expected input problem is detected (a LoRA target the model lacks, a precision a
GPU cannot run, a config transformers cannot build); the service turns it into a 422 naming
`field`. Any other exception out of the estimator is a bug and stays a 500.
"""

from __future__ import annotations

from typing import Any


class EstimateInputError(ValueError):
    """An input the estimator refuses; `field` is its dotted path in the estimate request."""

    def __init__(self, message: str, *, field: str, **extra: Any) -> None:
        super().__init__(message)
        self.field = field
        self.extra = extra
