"""The catalog's data as the estimator receives it: GPUs, prices per provider, storage prices.

The catalog (app/catalog/loader.py) reads these from its CSV files and the database; the pure
estimator takes a `Catalog` as an argument and never reads one itself.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

BASE_VERSION = 1  # version of the shipped data files; overrides count up from here
GIB = 1024**3
TERA = 1e12
GIGA = 1e9

# Old or short names people use for a catalog GPU; the value is the catalog id.
GPU_ALIASES = {"H100-80GB": "H100-80GB-SXM", "H100": "H100-80GB-SXM", "A100": "A100-80GB"}

# committed: a 1-year commitment's hourly rate (reserved instance, reservation, CUD); priced only
# when asked for by name, never picked as the cheapest list price.
PricingKind = Literal["on_demand", "spot", "committed"]
PRICING_KINDS: tuple[PricingKind, ...] = ("on_demand", "spot", "committed")
# Where a price row comes from: the hand-transcribed prices.csv shipped as the offline seed, a
# provider price-list import (app/catalog/prices/importers), or an admin override.
PriceOrigin = Literal["seed", "import", "override"]


class UnknownGpuError(ValueError):
    """A GPU id that is not in the catalog; the message lists the valid ids."""

    def __init__(self, gpu: str, valid: Iterable[str]) -> None:
        self.gpu = gpu
        self.valid = sorted(valid)
        close = difflib.get_close_matches(gpu, self.valid, n=3, cutoff=0.4)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        super().__init__(f"unknown GPU {gpu!r}{hint}; valid ids: {', '.join(self.valid)}")


class UnknownProviderError(ValueError):
    """A provider that has no prices in the catalog; the message lists the known ones."""

    def __init__(self, provider: str, valid: Iterable[str]) -> None:
        self.provider = provider
        self.valid = sorted(valid)
        super().__init__(f"unknown provider {provider!r}; valid providers: {', '.join(self.valid)}")


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator: memory, dense peak throughput by precision, bandwidths, efficiency class."""

    id: str
    name: str
    vendor: str
    memory_gib: float
    bf16_tflops_dense: float
    fp16_tflops_dense: float
    fp32_tflops: float
    memory_bandwidth_gbps: float  # GB/s (1e9 bytes/s), device memory (HBM or GDDR)
    interconnect: str
    interconnect_gbps: float  # GB/s, vendor headline GPU-to-GPU figure (both directions)
    supports_bf16: bool
    tdp_watts: float
    mfu_class: str
    source: str

    @property
    def memory_bytes(self) -> int:
        """Device memory in bytes."""
        return int(self.memory_gib * GIB)

    @property
    def memory_gb(self) -> float:
        """Device memory in decimal gigabytes."""
        return self.memory_bytes / GIGA

    @property
    def is_cpu(self) -> bool:
        """True for the `cpu` pseudo-device used to run and calibrate the loop without a GPU."""
        return self.mfu_class == "cpu"

    def peak_flops(self, compute_dtype: Literal["bf16", "fp16", "fp32"]) -> float:
        """Dense peak FLOP/s for matmuls in `compute_dtype` (0.0 where the GPU lacks it)."""
        tflops = {
            "bf16": self.bf16_tflops_dense,
            "fp16": self.fp16_tflops_dense,
            "fp32": self.fp32_tflops,
        }[compute_dtype]
        return tflops * TERA


@dataclass(frozen=True)
class PriceRow:
    """What one provider charges per GPU-hour for one GPU kind, on demand or spot."""

    provider: str
    gpu: str
    pricing: PricingKind
    usd_per_gpu_hour: float
    as_of: date
    source: str
    instance: str = ""
    gpus_per_instance: int = 1  # the smallest number of GPUs the provider rents at this price
    region: str = ""
    origin: PriceOrigin = "seed"

    def billed_gpus(self, num_gpus: int) -> int:
        """GPUs paid for when `num_gpus` are used: whole instances only."""
        per = max(self.gpus_per_instance, 1)
        return -(-num_gpus // per) * per


@dataclass(frozen=True)
class StoragePrice:
    """Object/volume storage price of one provider, per GB-month."""

    provider: str
    tier: str
    usd_per_gb_month: float
    as_of: date
    source: str


@dataclass(frozen=True)
class Catalog:
    """GPUs, prices and storage prices at one version; model configs are loaded on first use."""

    gpus: Mapping[str, GpuSpec]
    prices: tuple[PriceRow, ...]
    storage_prices: Mapping[str, StoragePrice]
    version: int = BASE_VERSION

    @functools.cached_property
    def providers(self) -> tuple[str, ...]:
        """Every provider with at least one GPU price, sorted."""
        return tuple(sorted({row.provider for row in self.prices}))

    def resolve_gpu_id(self, gpu: str) -> str:
        """The catalog id for `gpu` (exact id, alias, or case-insensitive match)."""
        if gpu in self.gpus:
            return gpu
        if gpu in GPU_ALIASES:
            return GPU_ALIASES[gpu]
        folded = {key.lower(): key for key in self.gpus}
        if gpu.lower() in folded:
            return folded[gpu.lower()]
        raise UnknownGpuError(gpu, self.gpus)

    def gpu(self, gpu: str) -> GpuSpec:
        """The spec of `gpu`; raises `UnknownGpuError` listing the valid ids."""
        return self.gpus[self.resolve_gpu_id(gpu)]

    def check_provider(self, provider: str) -> str:
        """`provider` if the catalog prices anything there; else `UnknownProviderError`."""
        if provider not in self.providers:
            raise UnknownProviderError(provider, self.providers)
        return provider

    def prices_for(
        self, gpu: str, *, provider: str | None = None, pricing: PricingKind | None = None
    ) -> list[PriceRow]:
        """Price rows for `gpu`, optionally one provider and/or pricing kind, cheapest first."""
        gpu_id = self.resolve_gpu_id(gpu)
        if provider is not None:
            self.check_provider(provider)
        rows = [
            row
            for row in self._prices_by_gpu.get(gpu_id, ())
            if (provider is None or row.provider == provider)
            and (row.pricing == pricing or (pricing is None and row.pricing != "committed"))
        ]
        # An imported list prices many regions: plan on each offer's cheapest region only.
        cheapest: dict[tuple[str, str], PriceRow] = {}
        for row in rows:  # cheapest first
            cheapest.setdefault((row.provider, row.pricing), row)
        return list(cheapest.values())

    def storage_price(self, provider: str | None) -> StoragePrice:
        """Storage price for `provider`, or the cheapest listed when there is none for it."""
        if provider is not None and provider in self.storage_prices:
            return self.storage_prices[provider]
        return min(self.storage_prices.values(), key=lambda s: s.usd_per_gb_month)

    def with_imports(self, imported: Mapping[str, Iterable[PriceRow]]) -> Catalog:
        """A catalog where each provider's imported rows replace its rows of the same kinds."""
        # Only the kinds imported: an AWS offer file has no spot, so the seed's AWS spot stays.
        rows = list(self.prices)
        for provider, new in imported.items():
            fresh = list(new)
            kinds = {r.pricing for r in fresh}
            rows = [r for r in rows if not (r.provider == provider and r.pricing in kinds)]
            rows.extend(fresh)
        return replace(self, prices=tuple(rows))

    def with_price_overrides(self, overrides: Iterable[PriceRow], version: int) -> Catalog:
        """A new catalog where each override replaces every row of its (provider, gpu, pricing)."""
        if version < self.version:
            raise ValueError(f"version must not go back from {self.version} to {version}")
        rows: dict[tuple[str, str, str, str], PriceRow] = {
            (r.provider, r.gpu, r.pricing, r.region): r for r in self.prices
        }
        for row in overrides:
            gpu_id = self.resolve_gpu_id(row.gpu)
            if row.usd_per_gpu_hour < 0:
                raise ValueError(f"negative price for {row.provider}/{gpu_id}")
            if row.pricing not in PRICING_KINDS:
                raise ValueError(f"pricing must be one of {PRICING_KINDS}, got {row.pricing!r}")
            key = (row.provider, gpu_id, row.pricing)
            same = sorted(
                (r for k, r in rows.items() if k[:3] == key), key=lambda r: r.usd_per_gpu_hour
            )
            if same and not row.instance:
                # A negotiated rate for the same offer: keep how the provider sells it.
                row = replace(
                    row,
                    instance=same[0].instance,
                    gpus_per_instance=same[0].gpus_per_instance,
                    region=same[0].region,
                )
            rows = {k: r for k, r in rows.items() if k[:3] != key}
            rows[(*key, row.region)] = replace(row, gpu=gpu_id)
        return replace(self, prices=tuple(rows.values()), version=version)

    @functools.cached_property
    def _prices_by_gpu(self) -> dict[str, tuple[PriceRow, ...]]:
        grouped: dict[str, list[PriceRow]] = {}
        for row in self.prices:
            grouped.setdefault(row.gpu, []).append(row)
        return {
            gpu: tuple(sorted(rows, key=lambda r: (r.usd_per_gpu_hour, r.provider)))
            for gpu, rows in grouped.items()
        }
