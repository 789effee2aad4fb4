"""Mean eval loss, its standard error and paired differences, from per-item losses.

A job's eval loss is the token-weighted mean over the eval items: R = sum(l_i) / sum(n_i), with
l_i the summed token loss of item i and n_i its loss tokens. Items, not tokens, are the
independent draws (the tokens of one item share its difficulty), so the standard error is the
ratio estimator's linearisation over items (Cochran, "Sampling Techniques", 3rd ed., section 6.3):
Var(R) ~ n / (n - 1) * sum((l_i - R n_i)^2) / (sum n_i)^2. Two jobs scored on the same eval set
are compared item by item: the paired difference is a ratio of the per-item differences, whose
standard error removes what the items' difficulty shares between the two jobs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanLoss:
    """A token-weighted mean loss over items with its standard error."""

    value: float
    se: float
    items: int
    tokens: int


def ratio_se(loss_sums: np.ndarray, tokens: np.ndarray) -> float:
    """The linearised standard error of sum(loss_sums) / sum(tokens) over items."""
    n = loss_sums.shape[-1]
    total = float(tokens.sum())
    if n < 2 or total <= 0:
        return math.nan
    ratio = float(loss_sums.sum()) / total
    resid = loss_sums - ratio * tokens
    return math.sqrt(n / (n - 1) * float((resid**2).sum())) / total


def mean_loss(loss_sums: Sequence[float], tokens: Sequence[int]) -> MeanLoss:
    """Token-weighted mean of the items' losses and its standard error (nan for one item)."""
    sums, counts = np.asarray(loss_sums, dtype=float), np.asarray(tokens, dtype=float)
    total = float(counts.sum())
    value = float(sums.sum()) / total if total > 0 else math.nan
    return MeanLoss(value, ratio_se(sums, counts), len(sums), int(total))


class NotPaired(ValueError):
    """The two eval curves were not scored on the same items."""


def paired_difference(
    a_sums: Sequence[float],
    b_sums: Sequence[float],
    tokens_a: Sequence[int],
    tokens_b: Sequence[int],
) -> MeanLoss:
    """Mean loss of A minus that of B on the same items, with the paired standard error."""
    if len(a_sums) != len(b_sums) or list(tokens_a) != list(tokens_b):
        raise NotPaired("the two evaluations were not made on the same items")
    diff = np.asarray(a_sums, dtype=float) - np.asarray(b_sums, dtype=float)
    return mean_loss(diff.tolist(), list(tokens_a))


def cost_per_improvement(cost_usd: float, base_loss: float, loss: float) -> float | None:
    """Dollars per nat of eval loss a run removed from its base model's: cost / (base - loss).

    None when the run did not lower the loss (no improvement to price) or a figure is not
    finite; 0 for a free run that improved.
    """
    gain = base_loss - loss
    if not (math.isfinite(cost_usd) and math.isfinite(gain)) or gain <= 0 or cost_usd < 0:
        return None
    return cost_usd / gain
