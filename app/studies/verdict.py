"""The verdict of a study: which candidate to run on the whole data, and why, from its evidence.

The rule (issue #25): the cheapest candidate whose predicted full-data eval loss meets the target
even at the high end of its 80% interval. Full fine-tuning is chosen over the adapters only on
evidence: every adapter candidate's loss is above the target with at least 80% probability,
and the full run's cost fits the budget. When the pilots cannot tell two candidates apart (their
intervals overlap), the verdict says so and keeps the cheaper; when a fit is poor, it says that.
Pure functions over the fitted predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.estimator.spec import Method
from app.studies.fit import Interval, prob_above, separated

# Confidence that the adapters miss the target before paying for full fine-tuning (issue #25:
# "LoRA's predicted loss above the target with >= 80% confidence"), the study's interval level.
FULL_FT_CONFIDENCE = 0.8


@dataclass(frozen=True)
class Evidence:
    """One candidate's predictions on the whole data."""

    index: int
    name: str
    method: Method
    loss: Interval
    cost_usd: float
    poor: str | None


@dataclass(frozen=True)
class Verdict:
    """The chosen candidate's index (None: none) and the reasons, as sentences with numbers."""

    candidate: int | None
    reasons: list[str]


def frontier(items: Sequence[Evidence]) -> list[int]:
    """Indexes of the candidates no other beats on both predicted loss and cost."""
    out = []
    for c in items:
        beaten = any(
            o.loss.value <= c.loss.value
            and o.cost_usd <= c.cost_usd
            and (o.loss.value < c.loss.value or o.cost_usd < c.cost_usd)
            for o in items
        )
        if not beaten:
            out.append(c.index)
    return out


def _loss(e: Evidence) -> str:
    return f"{e.loss.value:.3f} ({e.loss.low:.3f}-{e.loss.high:.3f})"


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.2g}"


def _reaches(e: Evidence) -> str:
    return f"{e.name} reaches {_loss(e)} for {_usd(e.cost_usd)}"


def decide(items: Sequence[Evidence], *, target: float, budget_usd: float | None) -> Verdict:
    """The candidate to run on the whole data and why (`items`: candidates with predictions)."""
    if not items:
        return Verdict(None, ["No candidate has a prediction: no pilot of any completed."])
    reasons: list[str] = []
    by_cost = sorted(items, key=lambda e: (e.cost_usd, e.loss.value))
    adapters = [e for e in by_cost if e.method != Method.FULL]
    full = [e for e in by_cost if e.method == Method.FULL]
    affordable = [e for e in by_cost if budget_usd is None or e.cost_usd <= budget_usd]
    meets = [e for e in affordable if e.loss.high <= target]
    choice: Evidence | None
    adapter_meets = any(e.method != Method.FULL for e in meets)
    if meets and (adapter_meets or not adapters):
        # An adapter that meets the target is the answer even where full fine-tuning costs
        # less: full fine-tuning is chosen only on evidence that the adapters miss it.
        pool = [e for e in meets if e.method != Method.FULL] if adapter_meets else meets
        choice = pool[0]
        kind = "adapter" if adapter_meets else "candidate"
        reasons.append(
            f"{_reaches(choice)}: it meets the target {target:.3f} even at the high end of "
            f"its 80% interval, and it is the cheapest {kind} that does."
        )
    else:
        choice = _beyond_adapters(adapters, full, meets, target, budget_usd, reasons)
        if choice is None:
            confident = bool(adapters) and _p_miss(adapters, target) >= FULL_FT_CONFIDENCE
            # Full fine-tuning only on evidence: without it, the adapters are the pool.
            pool = (affordable or by_cost) if confident or not adapters else adapters
            choice = _closest(pool, target, reasons)
    _compare(choice, by_cost, reasons)
    for e in by_cost:
        if e.poor is not None:
            reasons.append(
                f"The fit of {e.name} is poor ({e.poor}): treat its prediction with care."
            )
    return Verdict(choice.index, reasons)


def _beyond_adapters(
    adapters: list[Evidence],
    full: list[Evidence],
    meets: list[Evidence],
    target: float,
    budget_usd: float | None,
    reasons: list[str],
) -> Evidence | None:
    """Full fine-tuning when the evidence says the adapters miss the target; else None."""
    if not adapters:
        return None
    best = min(adapters, key=lambda e: e.loss.value)
    p_miss = _p_miss(adapters, target)
    full_meets = [e for e in meets if e.method == Method.FULL]
    if p_miss >= FULL_FT_CONFIDENCE and full_meets:
        chosen = full_meets[0]
        extra = chosen.cost_usd - best.cost_usd
        within = f", within the {_usd(budget_usd)} budget" if budget_usd is not None else ""
        reasons.append(
            f"LoRA tried and not enough: the best adapter, {best.name}, is predicted at "
            f"{_loss(best)}, above the target {target:.3f} with {p_miss:.0%} confidence "
            f"(every adapter at least that); {_reaches(chosen)}, meeting it, "
            f"{_usd(extra)} more than {best.name}'s {_usd(best.cost_usd)}{within}."
        )
        return chosen
    if p_miss >= FULL_FT_CONFIDENCE and full:
        over = [e for e in full if budget_usd is not None and e.cost_usd > budget_usd]
        why = (
            f"it costs {_usd(over[0].cost_usd)}, over the {_usd(budget_usd or 0)} budget"
            if over
            else f"it is predicted at {_loss(full[0])}, not below the target at its high end"
        )
        reasons.append(
            f"The adapters miss the target {target:.3f} ({best.name} at {_loss(best)}, "
            f"{p_miss:.0%} confidence); full fine-tuning would be next, but {why}."
        )
    elif full and p_miss < FULL_FT_CONFIDENCE:
        reasons.append(
            f"The pilots cannot tell whether {best.name} ({_loss(best)}) meets the target "
            f"{target:.3f}: its interval reaches across it ({p_miss:.0%} probability above), "
            "short of the 80% that would justify paying for full fine-tuning; the cheaper "
            "candidate is kept."
        )
        cheaper = [e for e in adapters if e.loss.value <= target]
        if cheaper:
            return cheaper[0]
    return None


def _p_miss(adapters: list[Evidence], target: float) -> float:
    """The confidence that every adapter misses the target: the least of their probabilities."""
    return min(prob_above(e.loss, target) for e in adapters)


def _closest(candidates: list[Evidence], target: float, reasons: list[str]) -> Evidence:
    """No candidate meets the target at the high end: the one predicted lowest, the cheaper of
    those the pilots cannot tell apart."""
    best = min(candidates, key=lambda e: e.loss.value)
    tied = [e for e in candidates if not separated(e.loss, best.loss)]
    choice = min(tied, key=lambda e: e.cost_usd)
    if not any(r.startswith("The pilots cannot tell") for r in reasons):
        reasons.append(
            f"No candidate is predicted to meet the target {target:.3f} at the high end of its "
            f"interval; {_reaches(choice)}, the lowest predicted loss"
            + (
                " among those the pilots cannot tell apart, and the cheapest of them."
                if len(tied) > 1
                else "."
            )
        )
    return choice


def _compare(choice: Evidence, by_cost: list[Evidence], reasons: list[str]) -> None:
    """The others against the choice: what they would add or save, and whether the pilots can
    tell them apart."""
    for e in by_cost:
        if e.index == choice.index:
            continue
        if not separated(e.loss, choice.loss):
            reasons.append(
                f"{e.name} ({_loss(e)} for {_usd(e.cost_usd)}) cannot be told apart from "
                f"{choice.name} by the pilots: their intervals overlap."
            )
        else:
            better = "lower" if e.loss.value < choice.loss.value else "higher"
            reasons.append(
                f"{_reaches(e)}: {better} than {choice.name}'s {choice.loss.value:.3f}, "
                f"{_usd(abs(e.cost_usd - choice.cost_usd))} "
                f"{'more' if e.cost_usd >= choice.cost_usd else 'less'}."
            )
