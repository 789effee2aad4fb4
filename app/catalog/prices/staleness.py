"""How old a price is, and the warning an estimate carries when it is older than allowed.

Pure functions: the caller passes today's date and the allowed age (TUNECOST_PRICE_MAX_AGE_DAYS),
so a cached estimate is re-checked against the calendar every time it is served or stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from app.estimator.catalog_types import PriceRow
from app.estimator.results import EstimateResult


def age_days(as_of: date, *, today: date) -> int:
    """Whole days from `as_of` to `today` (0 for a date in the future)."""
    return max((today - as_of).days, 0)


def is_stale(as_of: date, *, today: date, max_age_days: int) -> bool:
    """Whether a price read on `as_of` is older than `max_age_days` on `today`."""
    return age_days(as_of, today=today) > max_age_days


def stale_notes(result: EstimateResult, *, today: date, max_age_days: int) -> list[str]:
    """One warning per provider whose stale prices the answer used (the offer each method's
    result is priced at; the alternatives listed in `plans` are not used)."""
    by_provider: dict[str, dict[tuple[str, str, date], str]] = {}
    for item in result.results.values():
        if item.price_as_of is None or item.provider is None:
            continue
        if not is_stale(item.price_as_of, today=today, max_age_days=max_age_days):
            continue
        offers = by_provider.setdefault(item.provider, {})
        offers.setdefault((item.gpu, item.pricing, item.price_as_of), item.price_source or "")
    notes = []
    for provider, offers in sorted(by_provider.items()):
        listed = ", ".join(
            f"{gpu} {pricing} as of {as_of.isoformat()} ({age_days(as_of, today=today)} days old)"
            for gpu, pricing, as_of in sorted(offers)
        )
        sources = "; ".join(sorted(set(offers.values())))
        notes.append(
            f"stale price: {provider} {listed}, more than {max_age_days} days (source: "
            f"{sources}); refresh with `tunecost prices refresh` or set a current price"
        )
    return notes


def stale_rows(rows: Iterable[PriceRow], *, today: date, max_age_days: int) -> list[PriceRow]:
    """The rows of `rows` older than `max_age_days`."""
    return [r for r in rows if is_stale(r.as_of, today=today, max_age_days=max_age_days)]
