"""The hardware and price catalog: GPUs, $/GPU-hour per provider, storage $/GB-month.

Read once from the CSV files beside this module (units in the column names, an as-of date and a
source on every price row) into frozen dataclasses. Admin price overrides produce a new `Catalog`
with a higher `version`; the files are never rewritten.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from app.estimator.catalog_types import (
    BASE_VERSION,
    PRICING_KINDS,
    Catalog,
    GpuSpec,
    PriceRow,
    StoragePrice,
)

CATALOG_DIR = Path(__file__).resolve().parent


def _read_csv(name: str) -> list[dict[str, str]]:
    with (CATALOG_DIR / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _bool(text: str) -> bool:
    if text.strip().lower() not in {"true", "false"}:
        raise ValueError(f"expected true/false, got {text!r}")
    return text.strip().lower() == "true"


def _gpu(row: dict[str, str]) -> GpuSpec:
    return GpuSpec(
        id=row["id"],
        name=row["name"],
        vendor=row["vendor"],
        memory_gib=float(row["memory_gib"]),
        bf16_tflops_dense=float(row["bf16_tflops_dense"]),
        fp16_tflops_dense=float(row["fp16_tflops_dense"]),
        fp32_tflops=float(row["fp32_tflops"]),
        memory_bandwidth_gbps=float(row["hbm_gbps"]),
        interconnect=row["interconnect"],
        interconnect_gbps=float(row["interconnect_gbps"]),
        supports_bf16=_bool(row["supports_bf16"]),
        tdp_watts=float(row["tdp_watts"]),
        mfu_class=row["mfu_class"],
        source=row["source"],
    )


def _price(row: dict[str, str], gpus: Mapping[str, GpuSpec]) -> PriceRow:
    if row["gpu"] not in gpus:
        raise ValueError(f"prices.csv names GPU {row['gpu']!r}, which gpus.csv does not list")
    if row["pricing"] not in PRICING_KINDS:
        raise ValueError(f"prices.csv: pricing {row['pricing']!r} is not one of {PRICING_KINDS}")
    pricing = next(k for k in PRICING_KINDS if k == row["pricing"])
    return PriceRow(
        provider=row["provider"],
        gpu=row["gpu"],
        pricing=pricing,
        usd_per_gpu_hour=float(row["usd_per_gpu_hour"]),
        as_of=date.fromisoformat(row["as_of"]),
        source=row["source"],
        instance=row["instance"],
        gpus_per_instance=int(row["gpus_per_instance"]),
        region=row["region"],
    )


def _storage(row: dict[str, str]) -> StoragePrice:
    return StoragePrice(
        provider=row["provider"],
        tier=row["tier"],
        usd_per_gb_month=float(row["usd_per_gb_month"]),
        as_of=date.fromisoformat(row["as_of"]),
        source=row["source"],
    )


@functools.cache
def load_catalog() -> Catalog:
    """The shipped catalog (read from the CSV files once per process)."""
    gpus = {spec.id: spec for spec in map(_gpu, _read_csv("gpus.csv"))}
    prices = tuple(_price(row, gpus) for row in _read_csv("prices.csv"))
    storage = {s.provider: s for s in map(_storage, _read_csv("storage_prices.csv"))}
    return Catalog(gpus=gpus, prices=prices, storage_prices=storage, version=BASE_VERSION)
