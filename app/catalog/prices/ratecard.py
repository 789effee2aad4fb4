"""Organisation rate cards: negotiated per-GPU rates, and pricing an estimate at them.

A rate card is a list of lines, each naming a provider and a GPU or instance (optionally a
region and pricing kind), a discount in percent off the list price or a contracted price per
GPU-hour, a validity window and an optional commitment id. Pure functions: parsing (CSV or
JSON, through one pydantic model so both say which line and field is wrong) and applying a card
to an estimator answer, which keeps the list figures and adds the contracted ones beside them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.estimator.results import EstimateResult, MethodResult, Plan
from app.estimator.spec import Pricing

MAX_LINES = 10_000  # a whole organisation's negotiated rates fit many times over
# Names are stored as text: no control characters (a NUL would only be refused by the database,
# naming no field).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
CSV_COLUMNS = (
    "provider",
    "gpu",
    "instance",
    "region",
    "pricing",
    "discount_pct",
    "contracted_usd_per_gpu_hour",
    "valid_from",
    "valid_to",
    "commitment_id",
)


class RateLineIn(BaseModel):
    """One negotiated rate: a discount off list or a contracted $/GPU-hour, for a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    gpu: str | None = Field(
        None, min_length=1, max_length=64, pattern=PRINTABLE, description="catalog GPU id"
    )
    instance: str | None = Field(None, min_length=1, max_length=200, pattern=PRINTABLE)
    region: str | None = Field(
        None, min_length=1, max_length=64, pattern=PRINTABLE, description="unset: any"
    )
    pricing: Pricing | None = Field(None, description="unset: every pricing kind")
    discount_pct: float | None = Field(None, gt=0, lt=100)
    contracted_usd_per_gpu_hour: float | None = Field(None, ge=0, le=1000)
    valid_from: date
    valid_to: date | None = Field(None, description="last day it applies; unset: open-ended")
    commitment_id: str | None = Field(None, min_length=1, max_length=200, pattern=PRINTABLE)

    @model_validator(mode="after")
    def _one_rate_and_a_target(self) -> RateLineIn:
        if (self.discount_pct is None) == (self.contracted_usd_per_gpu_hour is None):
            raise ValueError("give exactly one of discount_pct or contracted_usd_per_gpu_hour")
        if self.gpu is None and self.instance is None:
            raise ValueError("name the gpu or the instance the rate applies to")
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self


class RateCardError(ValueError):
    """A rate card that cannot be read; `field` says where (lines[i].name)."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(message)


def parse_lines(raw: Sequence[Any]) -> list[RateLineIn]:
    """Validated lines from decoded JSON objects or CSV rows; `RateCardError` at the first bad."""
    if not raw:
        raise RateCardError("a rate card needs at least one line", field="lines")
    if len(raw) > MAX_LINES:
        raise RateCardError(f"more than {MAX_LINES} lines", field="lines")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(RateLineIn.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            field = f"lines[{i}].{where}" if where else f"lines[{i}]"
            raise RateCardError(f"{field}: {err['msg']}", field=field) from None
    return out


def parse_csv(text: str) -> list[RateLineIn]:
    """Lines of a CSV rate card (header row naming CSV_COLUMNS; empty cells are unset)."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown or "provider" not in header:
        raise RateCardError(
            f"CSV header must name columns of {', '.join(CSV_COLUMNS)}; unknown: "
            f"{', '.join(unknown) or 'none'}",
            field="header",
        )
    rows = [{k: v for k, v in row.items() if v not in (None, "")} for row in reader]
    return parse_lines(rows)


@dataclass(frozen=True)
class Contract:
    """The rate a line gives one priced offer."""

    usd_per_gpu_hour: float
    commitment_id: str | None


def _specificity(line: RateLineIn) -> tuple[bool, bool, bool, date]:
    return (
        line.instance is not None,
        line.region is not None,
        line.pricing is not None,
        line.valid_from,
    )


def contract_for(
    lines: Iterable[RateLineIn],
    *,
    provider: str,
    gpu: str,
    instance: str | None,
    region: str | None,
    pricing: str,
    list_price: float,
    on: date,
) -> Contract | None:
    """The most specific line valid `on` for this offer, as a contracted price (None: list)."""
    matching = [
        line
        for line in lines
        if line.provider == provider
        and line.gpu in (None, gpu)
        and line.instance in (None, instance)
        and line.region in (None, region)
        and line.pricing in (None, pricing)
        and line.valid_from <= on
        and (line.valid_to is None or on <= line.valid_to)
    ]
    if not matching:
        return None
    line = max(matching, key=_specificity)
    if line.contracted_usd_per_gpu_hour is not None:
        price = line.contracted_usd_per_gpu_hour
    else:
        price = list_price * (1 - (line.discount_pct or 0.0) / 100)
    return Contract(usd_per_gpu_hour=price, commitment_id=line.commitment_id)


def _priced(item: Any, lines: Sequence[RateLineIn], on: date) -> dict[str, Any]:
    """The contracted fields of one plan or method result ({} when no line applies)."""
    if item.provider is None or item.price_per_gpu_hour is None:
        return {}
    contract = contract_for(
        lines,
        provider=item.provider,
        gpu=item.gpu,
        instance=item.instance,
        region=item.region,
        pricing=item.pricing,
        list_price=item.price_per_gpu_hour,
        on=on,
    )
    if contract is None:
        return {}
    return {
        "contracted_price_per_gpu_hour": contract.usd_per_gpu_hour,
        "contracted_cost_usd": item.gpu_hours * contract.usd_per_gpu_hour,
        "commitment_id": contract.commitment_id,
    }


def apply(result: EstimateResult, *, lines: Sequence[RateLineIn], on: date) -> EstimateResult:
    """`result` with contracted price and cost beside the list ones wherever a line applies."""
    if not lines:
        return result
    results: dict[Any, MethodResult] = {
        m: r.model_copy(update=_priced(r, lines, on)) for m, r in result.results.items()
    }
    plans: dict[Any, list[Plan]] = {
        m: [p.model_copy(update=_priced(p, lines, on)) for p in ps]
        for m, ps in result.plans.items()
    }
    hits = sum(p.contracted_price_per_gpu_hour is not None for ps in plans.values() for p in ps)
    notes = list(result.notes)
    if hits:
        notes.append(
            f"rate card: {hits} plan(s) priced at your contracted rate as well "
            "(contracted_cost_usd beside the list cost_usd)"
        )
    return result.model_copy(update={"results": results, "plans": plans, "notes": notes})
