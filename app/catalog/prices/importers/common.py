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
from app.estimator.catalog_types import PriceRow, PricingKind


class PriceImportError(ValueError):
    """A provider document that cannot be imported as a whole; the message says why."""


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
        raise PriceImportError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise PriceImportError(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PriceImportError(f"{where}.{key}: unexpected {type(value).__name__} {value!r}")
    return value


def usd(text: Any, where: str) -> float:
    """A non-negative price from a number or a decimal string."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise PriceImportError(f"{where}: price {text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise PriceImportError(f"{where}: price {text!r} is not a finite non-negative number")
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
) -> PriceRow:
    """One catalog row: the instance's hourly price divided by its GPUs."""
    if gpus < 1:
        raise PriceImportError(f"{item.instance}: {gpus} GPUs per instance")
    return PriceRow(
        provider=item.provider,
        gpu=item.gpu,
        pricing=pricing,
        usd_per_gpu_hour=instance_usd_per_hour / gpus,
        as_of=fetched_at.date(),
        source=source,
        instance=item.instance,
        gpus_per_instance=gpus,
        region=region,
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
