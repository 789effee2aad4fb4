"""Low / high bounds of the time and money of a plan, as memory has low / high bytes.

The time model is checked against published runs (bench/time_accuracy.py) and, once jobs have
run, re-fitted on them (app/calibration); how far a real run may land from the expected figure
depends on which of the two the estimate rests on. Money is time x price, so it gets the same
factors.
"""

from __future__ import annotations

from typing import Literal

# Prior: the published cases land within -16%..+4% of the prior estimate (bench/
# time_accuracy.py), but they are one GPU (L40S) and one model family; the other GPU classes'
# priors rest on literature ranges (efficiency.py) that span about +-30%. Asymmetric because a
# run is more often slower than planned (throttling, data loading, a busy host) than faster.
PRIOR_TIME_BAND = (0.7, 1.5)
# Calibrated: the fitted terms reproduce the group's own finished jobs; what remains is run-to-run
# spread, +-10-25% for tiny jobs on a shared CPU (tests/calibration/test_real_jobs.py)
# and less on a dedicated GPU.
CALIBRATED_TIME_BAND = (0.8, 1.25)

Basis = Literal["prior", "calibrated"]


def time_band(basis: Basis) -> tuple[float, float]:
    """(low, high) factors on the expected hours, GPU-hours and cost for an estimate's basis."""
    return CALIBRATED_TIME_BAND if basis == "calibrated" else PRIOR_TIME_BAND


def bounds(value: float | None, basis: Basis) -> tuple[float | None, float | None]:
    """`value` scaled by the band of `basis` (None stays None)."""
    if value is None:
        return None, None
    low, high = time_band(basis)
    return value * low, value * high
