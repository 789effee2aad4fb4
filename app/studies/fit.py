"""Eval loss against data size, fitted over a study's pilots, and the full-data loss it predicts.

The law. A fine-tune's eval loss falls with the data it trains on as L(D) = E + B * D^-beta:
E the loss no amount of this data removes, B and beta how fast the rest goes (the data-size
term of Zhang et al. 2024, "When Scaling Meets LLM Finetuning", arXiv 2402.17193; Lin et al.
2024, "Selecting Large Language Model to Fine-tune via Rectified Scaling Law", arXiv
2402.02314, show it holds once D is past a small-data "pre-power" phase; see below for pilots
that are not). D is measured as a share of the full training set (u = D / full size), so B is
the reducible loss left at full data and the prediction is simply E + B. For a fixed beta the
law is linear in E and B, so the fit profiles beta over a grid, solves E and B in closed form
with E >= 0 and B >= 0 (a loss that rises with data is fitted flat, never as a negative
power), and then polishes all three with scipy's bounded least squares.

What is predicted. The loss the full-data run will measure on the SAME eval items the pilots
were scored on (every job of a dataset shares its held-out set: app/evals/holdout.py). So the
items are not a sample to draw again: a hard item is as hard for the full run, and an item
that gains much with data gains as much there. Resampling items (a paired bootstrap over
items) would count both as uncertainty; on synthetic studies whose items differ in how much
they gain it covered the truth in 91-97% of trials for a nominal 80%. What is uncertain is
each run's own noise on these items, and it is estimated paired, item by item: each item's
losses over the pilots are fitted with its own level and scale of the curve's shape
(c_i + d_i * u^-beta), and what is left over is that noise (a sandwich estimate with token
weights). The bootstrap draws the pilots' mean losses again about the fitted curve with that
noise, refits, predicts, and adds the full run's own draw; with more pilots than parameters
the mean curve's residuals beyond that noise (whole-run noise, misfit of the law) are added
too. The interval is the bootstrap's percentiles. The tests (tests/studies/test_fit.py) check
its coverage on synthetic curves; the benchmark (bench/study_accuracy.py) checks it against
real full-data runs.

Before the law sets in. A power law's drop per doubling of data shrinks as data grows. Lin et
al. 2024 find a "pre-power" stretch at small data where it does not; pilots on that stretch
(unless their drop per doubling shrinks in 90% of the bootstrap draws, they count as on it)
cannot say where the curve will bend. The law fitted to them anyway under-predicts the gain
(bench/study_accuracy.py measures this on tiny models), so the prediction then carries the
pilots' latest fall per doubling on to full data, and the interval is drawn a third each from
the law's extrapolation (the least gain), that trend, and the trend steepened by
PRE_POWER_STEEPENING (the most). Such a fit is flagged poor with that reason: pilots past the
bend settle it.

A poor fit says why (`CurveFit.poor`): fewer than three data sizes (three parameters cannot be
told apart), pilot losses that do not fall with data, beta at a bound of its range (the pilots
do not pin the curvature; the extrapolation then rests on the bound), residuals large next to
the items' noise, a floor E fitted at its bound 0, or the pre-power stretch above.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import norm

from app.evals.stats import mean_loss

MIN_SIZES = 3  # E, B and beta: three distinct data sizes at least
# The range of beta. Below 0.02 the curve falls by under 6% of B over a 20x span of data, a
# flat line to any pilot; above 2 it is flat after the smallest pilot. Either end means the
# pilots did not pin the curvature.
BETA_MIN, BETA_MAX = 0.02, 2.0
BETA_GRID = 400  # log-spaced profile points: ~1.2% apart in beta, finer than its bootstrap spread
# Residuals this many times the pilots' standard error mean the law does not describe the pilots.
POOR_RESIDUAL_Z = 3.0
ROUNDING_NATS = 1e-9  # residuals below this are the arithmetic's, whatever the noise
FLOOR_AT_BOUND = 1e-6  # a fitted E this close to 0 sits on its bound
# The share of bootstrap replicates that must agree for the pilots' drop per doubling to count
# as shrinking (the law's bend) or growing, rather than noise.
ACCELERATING_SUPPORT = 0.9
# On the pre-power stretch, how much more than the pilots' latest fall per doubling the fall
# past the largest pilot may be: in 11 studies of bench/study_accuracy.py's tiny models (three
# worlds, 3-8 epochs, seeds 0-2) the measured fall from the 20% pilot to full data was
# 0.92-1.41x that fall carried on (then 1.27-1.47x in five fresh seeds, 100-104).
PRE_POWER_STEEPENING = 0.5
NON_MONOTONE = "non-monotone"
DEFAULT_LEVEL = 0.8  # the interval the study reports (issue 25: "an 80% interval")
DEFAULT_BOOT = 200


@dataclass(frozen=True)
class Pilot:
    """One complete short run of a candidate on a share of the data, scored at its end.

    `rows` is D, the training examples the pilot trained on (in the unit of `fit_curve`'s
    `full_size`). `item_losses` are the mean token losses of the eval items, the same items in
    the same order in every pilot of a study; `item_tokens`, when given, weight them so the mean
    is the token-weighted eval loss a job reports (app/evals/stats.py); else items weigh equally.
    """

    fraction: float
    rows: int
    item_losses: tuple[float, ...]
    cost_usd: float
    item_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.rows < 1:
            raise ValueError(f"rows must be at least 1, got {self.rows}")
        if not self.item_losses:
            raise ValueError("a pilot needs the losses of its eval items")
        if self.item_tokens and len(self.item_tokens) != len(self.item_losses):
            raise ValueError("item_tokens must have one count per item loss")

    @property
    def loss(self) -> float:
        """The pilot's mean eval loss (token-weighted when item_tokens are given)."""
        return float(np.average(self.item_losses, weights=_weights(self)))


@dataclass(frozen=True)
class Interval:
    """A value with the interval at `level` around it; `samples` are the bootstrap draws behind
    it (left out of equality and repr), for probabilities such as `prob_above`."""

    value: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL
    samples: tuple[float, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class CurveFit:
    """L(D) = e + b * (D / full_size)^-beta fitted over a study's pilots.

    `residual_rmse` is over the pilots' mean losses; `poor` is a reason to distrust the fit
    (None when there is none).
    """

    e: float
    b: float
    beta: float
    n_pilots: int
    residual_rmse: float
    poor: str | None
    full_size: int = 1

    def predict(self, d: float) -> float:
        """The fitted loss at data size `d` (the pilots' unit, e.g. rows)."""
        return self.e + self.b * float((d / self.full_size) ** -self.beta)


def _weights(pilot: Pilot) -> np.ndarray:
    if pilot.item_tokens:
        return np.asarray(pilot.item_tokens, dtype=float)
    return np.ones(len(pilot.item_losses))


def _beta_grid() -> np.ndarray:
    return np.geomspace(BETA_MIN, BETA_MAX, BETA_GRID)


def _profile(u: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (E, B, beta) per row of `means` (shape (R, k)) over the beta grid, E, B >= 0."""
    betas = _beta_grid()
    x = u[None, :] ** -betas[:, None]  # (G, k)
    xc = x - x.mean(axis=1, keepdims=True)
    sxx = (xc**2).sum(axis=1)  # (G,)
    mbar = means.mean(axis=1, keepdims=True)  # (R, 1)
    mc = means - mbar
    syy = (mc**2).sum(axis=1, keepdims=True)  # (R, 1)
    sxy = mc @ xc.T  # (R, G)
    b = sxy / sxx
    e = mbar - b * x.mean(axis=1)[None, :]
    ssr = syy - sxy * b
    # A loss that does not fall with data: flat at its mean.
    flat = b < 0
    b = np.where(flat, 0.0, b)
    e = np.where(flat, mbar, e)
    ssr = np.where(flat, syy, ssr)
    # A floor below zero: the curve through the origin instead.
    neg = e < 0
    sxm = means @ x.T  # (R, G)
    sxx0 = (x**2).sum(axis=1)[None, :]
    b0 = np.maximum(sxm / sxx0, 0.0)
    ssr0 = (means**2).sum(axis=1, keepdims=True) - sxm * b0
    b = np.where(neg, b0, b)
    e = np.where(neg, 0.0, e)
    ssr = np.where(neg, ssr0, ssr)
    best = np.argmin(ssr, axis=1)
    rows = np.arange(means.shape[0])
    return e[rows, best], b[rows, best], betas[best]


def _polish(u: np.ndarray, m: np.ndarray, e: float, b: float, beta: float) -> np.ndarray:
    """Refine a profile fit with scipy's bounded least squares (trust region reflective)."""

    def resid(p: np.ndarray) -> np.ndarray:
        return np.asarray(p[0] + p[1] * u ** -p[2] - m)

    lo, hi = [0.0, 0.0, BETA_MIN], [np.inf, np.inf, BETA_MAX]
    start = np.clip([e, b, beta], [0.0, 0.0, BETA_MIN], [np.inf, np.inf, BETA_MAX])
    start = np.minimum(np.maximum(start, np.asarray(lo) + 1e-12), hi)
    res = least_squares(resid, start, bounds=(lo, hi), method="trf", x_scale="jac")
    best = res.x if np.sum(res.fun**2) <= np.sum(resid(start) ** 2) else start
    return np.asarray(best, dtype=float)


def _check(pilots: Sequence[Pilot], full_size: int) -> None:
    if not pilots:
        raise ValueError("no pilots to fit")
    if full_size < 1:
        raise ValueError(f"full_size must be at least 1, got {full_size}")
    n = len(pilots[0].item_losses)
    if any(len(p.item_losses) != n for p in pilots):
        raise ValueError("every pilot must be scored on the same eval items")
    if any(p.item_tokens != pilots[0].item_tokens for p in pilots):
        raise ValueError("every pilot must weigh the eval items alike (same item_tokens)")
    if any(p.rows > full_size for p in pilots):
        raise ValueError("a pilot cannot train on more rows than the full data")


def fit_curve(
    pilots: Sequence[Pilot],
    full_size: int,
    *,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> tuple[CurveFit, Interval]:
    """Fit E + B * D^-beta over the pilots and predict the full-data eval loss with an interval.

    Args:
        pilots: complete runs on shares of the data, scored on the same eval items.
        full_size: D of the full-data run, in the pilots' unit (`Pilot.rows`).
        level: the interval's coverage (0.8: from the 10th to the 90th percentile).
        n_boot: bootstrap replicates.
        seed: the bootstrap's random seed (the same pilots and seed give the same interval).

    Returns:
        The fit over the pilots' mean losses, and the predicted loss of the full-data run on
        the same eval items with its interval and bootstrap samples.
    """
    _check(pilots, full_size)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    order = sorted(range(len(pilots)), key=lambda i: pilots[i].rows)
    ps = [pilots[i] for i in order]
    u = np.asarray([p.rows / full_size for p in ps], dtype=float)
    y = np.asarray([p.item_losses for p in ps], dtype=float)  # (k, n)
    w = _weights(ps[0])
    k = y.shape[0]
    m = y @ w / w.sum()

    sizes = len(set(u.tolist()))
    if sizes < MIN_SIZES:
        # No curve: the largest pilot's loss stands for full data's (flat from there on).
        rmse = float(np.sqrt(np.mean((m - m[-1]) ** 2)))
        fit = CurveFit(float(m[-1]), 0.0, BETA_MIN, k, rmse, _too_few(sizes), full_size=full_size)
        return fit, _flat_interval(m, y, w, level)

    e, b, beta = (float(v[0]) for v in _profile(u, m[None, :]))
    e, b, beta = (float(v) for v in _polish(u, m, e, b, beta))
    curve = e + b * u**-beta
    resid = m - curve
    rmse = float(np.sqrt(np.mean(resid**2)))

    noise_var = _run_noise_var(u, y, w, beta)
    # Whole-run noise and misfit: what the mean curve's residuals hold beyond the items' noise.
    extra_var = 0.0
    if k > 3:
        extra_var = max(float((resid**2).sum()) / (k - 3) - noise_var, 0.0)

    # Pilots drawn again about the fitted curve with their noise, refitted, and the full run's
    # own noise added to each prediction.
    rng = np.random.default_rng(seed)
    run_sd = math.sqrt(noise_var + extra_var)
    boot_means = curve[None, :] + rng.normal(0.0, run_sd, size=(n_boot, k))
    be, bb, _ = _profile(u, boot_means)
    samples = be + bb + rng.normal(0.0, run_sd, size=n_boot)

    value = e + b
    poor = _poor(y, w, resid, math.sqrt(noise_var), beta, e)
    # The pilots as measured, drawn again with their noise: do they bend as the law does? (Only
    # asked of pilots whose loss falls with data: for others the law is not the question.)
    falling = not poor or not poor.startswith(NON_MONOTONE)
    bend = _no_bend(u, m[None, :] + rng.normal(0.0, run_sd, size=(n_boot, k)))
    if bend is not None and falling:
        # A third of the samples stay the law's, a third carry the pilots' trend on, a third
        # the trend steepened.
        reason, carried, steepened = bend
        third = n_boot // 3
        samples[third : 2 * third] = carried[third : 2 * third]
        samples[2 * third :] = steepened[2 * third :]
        samples[third:] += rng.normal(0.0, run_sd, size=n_boot - third)
        value = float(_trend(u, m[None, :])[2][0])
        poor = reason
    tail = (1 - level) / 2
    low, high = (float(q) for q in np.quantile(samples, [tail, 1 - tail]))
    fit = CurveFit(e, b, beta, k, rmse, poor, full_size=full_size)
    interval = Interval(
        value, min(low, value), max(high, value), level, tuple(float(s) for s in samples)
    )
    return fit, interval


def _run_noise_var(u: np.ndarray, y: np.ndarray, w: np.ndarray, beta: float) -> float:
    """The variance of one run's mean eval loss on these items from the runs' own noise.

    Items differ in difficulty and in how much they gain with data, and neither is noise for a
    run scored on the same items: each item's losses are fitted with its own level and scale of
    the curve's shape (c_i + d_i * u^-beta), and what is left over is. With token weights the
    mean's variance is the weighted sum of the items' (a sandwich estimate), scaled up for the
    two parameters each item's fit used (k / (k - 2)).
    """
    k = y.shape[0]
    x = np.column_stack([np.ones(k), u**-beta])  # (k, 2)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)  # (2, n): every item at once
    resid = y - x @ coef
    per_pilot = (resid**2) @ (w**2) / w.sum() ** 2
    return float(per_pilot.mean() * k / (k - 2))


def _too_few(sizes: int) -> str:
    return (
        f"{sizes} data size(s): the law has three parameters and needs pilots on at least "
        f"{MIN_SIZES} fractions; the prediction is the largest pilot's loss, not an "
        "extrapolation (more data usually lowers it)"
    )


def _flat_interval(m: np.ndarray, y: np.ndarray, w: np.ndarray, level: float) -> Interval:
    """Too few sizes to extrapolate: the last pilot's loss with its items' standard error."""
    last = y[-1]
    n_eff = w.sum() ** 2 / (w**2).sum()
    sd = float(np.sqrt(np.cov(last, aweights=w) / n_eff)) if len(last) > 1 else 0.0
    z = float(norm.ppf(0.5 + level / 2))
    value = float(m[-1])
    return Interval(value, value - z * sd, value + z * sd, level)


def _trend(u: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `means`: the loss's slope per unit of log-size between the two smallest and
    between the two largest data sizes, and the largest pilot's loss carried to full data
    (u = 1) at the latest slope. Pilots on one size are averaged."""
    sizes = np.unique(u)
    by_size = np.stack([means[:, u == s].mean(axis=1) for s in sizes], axis=1)
    t = np.log(sizes)
    first = (by_size[:, 1] - by_size[:, 0]) / (t[1] - t[0])
    last = (by_size[:, -1] - by_size[:, -2]) / (t[-1] - t[-2])
    return first, last, by_size[:, -1] - last * t[-1]


def _no_bend(u: np.ndarray, draws: np.ndarray) -> tuple[str, np.ndarray, np.ndarray] | None:
    """Why the pilots do not show the power law's bend, and per draw of the pilots their trend
    carried to full data, as it is and steepened; None when they bend as the law does.

    A power law's drop per doubling of data shrinks as data grows. Pilots whose drop does not
    shrink (in at least ACCELERATING_SUPPORT of the draws) are on the stretch Lin et al. 2024
    call the pre-power phase, before the law sets in: there the law, fitted anyway,
    under-predicts the gain, and the data cannot say where the bend will come.
    """
    first, last, carried = _trend(u, draws)
    if float(np.mean(last > first)) >= ACCELERATING_SUPPORT:  # flatter at the larger pilots
        return None
    if float(np.mean(last < first)) >= ACCELERATING_SUPPORT:
        shape = "the loss falls faster per doubling of data at the larger pilots"
    else:
        shape = "the loss falls about as much per doubling of data at every pilot size"
    largest = draws[:, u == u.max()].mean(axis=1)
    steepened = largest + (carried - largest) * (1 + PRE_POWER_STEEPENING)
    reason = (
        f"pre-power phase: {shape}, and a power law's fall slows (Lin et al. 2024's rectified "
        "stretch); the pilots cannot say where the curve bends: the prediction carries their "
        "latest fall per doubling on to full data, and the interval spans the law's "
        f"extrapolation (less gain) and that fall steepened by {PRE_POWER_STEEPENING:.0%} "
        "(more)"
    )
    return reason, carried, steepened


def _rises(y: np.ndarray, w: np.ndarray) -> bool:
    """Whether a pilot (rows of `y`, by size) scores higher than the one before it by more than
    two paired standard errors over the items (app/evals/stats.py)."""
    for before, after in itertools.pairwise(y):
        diff = mean_loss(((after - before) * w).tolist(), w.tolist())
        se = diff.se if math.isfinite(diff.se) else 0.0
        if diff.value > max(2 * se, ROUNDING_NATS):
            return True
    return False


def _poor(
    y: np.ndarray,
    w: np.ndarray,
    resid: np.ndarray,
    se: float,
    beta: float,
    e: float,
) -> str | None:
    """Why the fit should not be trusted, or None."""
    if _rises(y, w):
        return (
            f"{NON_MONOTONE}: a larger pilot has a higher eval loss than a smaller one by more "
            "than two paired standard errors; the loss does not fall with data as the law says"
        )
    if beta <= BETA_MIN * 1.01 or beta >= BETA_MAX * 0.99:
        return (
            f"beta at a bound of [{BETA_MIN}, {BETA_MAX}]: the pilots do not pin the curve's "
            "bend; add a smaller or larger fraction"
        )
    rmse = float(np.sqrt(np.mean(resid**2)))
    if rmse > max(POOR_RESIDUAL_Z * se, ROUNDING_NATS):
        return (
            f"large residuals: the pilots sit {rmse:.3g} from the "
            f"curve, over {POOR_RESIDUAL_Z:g}x their noise; the law does not describe them"
        )
    if e <= FLOOR_AT_BOUND:
        return (
            "floor at zero: the pilots fall too steadily for a power law with a positive floor "
            "E; the extrapolation leans on the bound E >= 0"
        )
    return None


def separated(a: Interval, b: Interval) -> bool:
    """Whether two intervals do not overlap (the pilots tell the two candidates apart)."""
    return a.high < b.low or b.high < a.low


def prob_above(estimate: Interval | Sequence[float], target: float) -> float:
    """The probability that the loss is above `target`.

    From the bootstrap samples when there are any (an Interval's `samples`, or a sequence of
    draws); else from a normal with the interval's centre and width.
    """
    if isinstance(estimate, Interval):
        if estimate.samples:
            return prob_above(estimate.samples, target)
        z = float(norm.ppf(0.5 + estimate.level / 2))
        sd = (estimate.high - estimate.low) / (2 * z)
        if sd <= 0:
            return float(estimate.value > target)
        return float(norm.sf(target, loc=estimate.value, scale=sd))
    draws = np.asarray(estimate, dtype=float)
    if draws.size == 0:
        raise ValueError("no samples")
    return float(np.mean(draws > target))
