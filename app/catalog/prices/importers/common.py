"""What every price-list importer shares: the error it raises, the instance map, the row it makes.

An importer is a pure function from one provider document (already parsed JSON) to per-GPU
`PriceRow`s. It reads the whole document before answering, and raises `PriceImportError` (which
says why) for anything malformed or partial, so a failed import never reaches the database.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.catalog.loader import CATALOG_DIR, load_catalog
from app.catalog.schemas import MAX_USD_PER_GPU_HOUR
from app.estimator.catalog_types import PriceRow, PricingKind

MAX_REGION_CHARS = 64  # the width of imported_prices.region
MAX_INSTANCE_CHARS = 200  # the width of imported_prices.instance


class PriceImportError(ValueError):
    """A provider document that cannot be imported as a whole; the message says why and
    `field`, when known, is where in the document (a dotted path)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def stored_name(value: str, *, what: str, max_chars: int, where: str) -> str:
    """A name from the document that can be stored: at most `max_chars`, no control characters
    (a NUL would only be refused by the database, naming nothing)."""
    if len(value) > max_chars or not value.isprintable():
        raise PriceImportError(
            f"{where}: {what} {value[:80]!r} is not at most {max_chars} printable characters",
            field=_path(where),
        )
    return value


def gpu_hour_price(usd_per_gpu_hour: float, where: str) -> float:
    """A per-GPU hourly price within the bound a price override has (MAX_USD_PER_GPU_HOUR)."""
    if usd_per_gpu_hour > MAX_USD_PER_GPU_HOUR:
        raise PriceImportError(
            f"{where}: {usd_per_gpu_hour:.6g} USD per GPU-hour is over the "
            f"{MAX_USD_PER_GPU_HOUR:g} any price may be (a typo or a wrong unit?)",
            field=_path(where),
        )
    return usd_per_gpu_hour


@dataclass(frozen=True)
class InstanceGpus:
    """The GPU kind and count of one provider instance (or GPU SKU)."""

    provider: str
    instance: str
    gpu: str
    gpus_per_instance: int


@functools.cache
def instance_map() -> Mapping[tuple[str, str], InstanceGpus]:
    """(provider, instance) -> GPUs, from app/catalog/instances.csv (checked against gpus.csv)."""
    gpus = load_catalog().gpus
    out: dict[tuple[str, str], InstanceGpus] = {}
    with (CATALOG_DIR / "instances.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["gpu"] not in gpus:
                raise ValueError(f"instances.csv names GPU {row['gpu']!r}, not in gpus.csv")
            item = InstanceGpus(
                row["provider"], row["instance"], row["gpu"], int(row["gpus_per_instance"])
            )
            out[(item.provider, item.instance)] = item
    return out


def instances_of(provider: str) -> dict[str, InstanceGpus]:
    """The mapped instances of one provider, by instance name."""
    return {k[1]: v for k, v in instance_map().items() if k[0] == provider}


def need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`obj[key]` when it is of `kind`; otherwise a `PriceImportError` naming `where`."""
    if not isinstance(obj, Mapping):
        raise PriceImportError(
            f"{where}: expected an object, got {type(obj).__name__}", field=_path(where)
        )
    if key not in obj:
        raise PriceImportError(f"{where}: missing {key!r}", field=_path(where, key))
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PriceImportError(
            f"{where}.{key}: unexpected {type(value).__name__} {value!r}"[:400],
            field=_path(where, key),
        )
    return value


def _path(where: str, key: str | None = None) -> str | None:
    """A dotted path in the document; None for the document itself (its importers call the root
    'offer file', 'page', 'list' or 'answer')."""
    inside = None if " " in where or where in ("page", "list", "answer") else where
    parts = [p for p in (inside, key) if p]
    return ".".join(parts) or None


def usd(value_in: Any, where: str) -> float:
    """A non-negative price from a number or a decimal string."""
    try:
        value = float(value_in)
    except (TypeError, ValueError):
        raise PriceImportError(
            f"{where}: price {value_in!r} is not a number"[:400], field=_path(where)
        ) from None
    if not value >= 0 or value == float("inf"):
        raise PriceImportError(
            f"{where}: price {value_in!r} is not a finite non-negative number", field=_path(where)
        )
    return value


def per_gpu_row(
    *,
    item: InstanceGpus,
    instance_usd_per_hour: float,
    gpus: int,
    pricing: PricingKind,
    region: str,
    fetched_at: datetime,
    source: str,
    where: str,
) -> PriceRow:
    """One catalog row: the instance's hourly price divided by its GPUs (`where`: the entry's
    path in the document, for errors)."""
    if gpus < 1:
        raise PriceImportError(f"{item.instance}: {gpus} GPUs per instance", field=_path(where))
    return PriceRow(
        provider=item.provider,
        gpu=item.gpu,
        pricing=pricing,
        usd_per_gpu_hour=gpu_hour_price(instance_usd_per_hour / gpus, where),
        as_of=fetched_at.date(),
        source=stored_name(source, what="source", max_chars=len(source), where=where),
        instance=item.instance,
        gpus_per_instance=gpus,
        region=stored_name(region, what="region", max_chars=MAX_REGION_CHARS, where=where),
        origin="import",
    )


def check_rows(rows: list[PriceRow], provider: str) -> list[PriceRow]:
    """The rows, or a `PriceImportError` when the document priced no catalog GPU at all."""
    if not rows:
        raise PriceImportError(
            f"the {provider} document prices no instance of app/catalog/instances.csv: "
            "nothing to import"
        )
    seen: set[tuple[str, str, str, str]] = set()
    for r in rows:
        key = (r.gpu, r.pricing, r.region, r.instance)
        if key in seen:
            raise PriceImportError(
                f"{provider}: two prices for {r.instance} {r.pricing} in {r.region or 'any region'}"
            )
        seen.add(key)
    return rows
