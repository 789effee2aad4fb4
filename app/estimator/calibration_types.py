"""Fitted corrections from finished jobs, as the estimator consumes them.

Calibration (fitting from job actuals) lives outside the pure engine; the engine only reads the
result: per (GPU id, method) an efficiency, the fixed seconds of a run (start-up, evaluation,
saving), a factor on the modelled per-step floor and a memory factor, each replacing its prior.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.estimator.spec import Method


@dataclass(frozen=True)
class Calibration:
    """What finished jobs on one (GPU, method) taught: time terms and a memory factor."""

    mfu: float | None  # replaces the prior efficiency when set
    memory_factor: float | None  # measured peak / estimated peak; scales the memory estimate
    jobs: int  # how many finished jobs the fit rests on
    run_overhead_s: float | None = None  # replaces start-up + loading + saving when set
    host_scale: float | None = None  # measured / modelled per-step floor (host time)

    def __post_init__(self) -> None:
        if self.mfu is not None and not 0 < self.mfu <= 1:
            raise ValueError(f"calibrated mfu must be in (0, 1], got {self.mfu}")
        if self.memory_factor is not None and self.memory_factor <= 0:
            raise ValueError(f"memory_factor must be positive, got {self.memory_factor}")
        if self.jobs < 0:
            raise ValueError("jobs must not be negative")
        if self.run_overhead_s is not None and self.run_overhead_s < 0:
            raise ValueError(f"run_overhead_s must not be negative, got {self.run_overhead_s}")
        if self.host_scale is not None and self.host_scale <= 0:
            raise ValueError(f"host_scale must be positive, got {self.host_scale}")

    @property
    def usable(self) -> bool:
        """True when it rests on at least one job and corrects something."""
        fitted = (self.mfu, self.memory_factor, self.run_overhead_s, self.host_scale)
        return self.jobs > 0 and any(v is not None for v in fitted)


CalibrationTable = Mapping[tuple[str, Method], Calibration]


def lookup(table: CalibrationTable | None, gpu_id: str, method: Method) -> Calibration | None:
    """The usable calibration for (gpu_id, method), if there is one."""
    if not table:
        return None
    found = table.get((gpu_id, method))
    return found if found is not None and found.usable else None
