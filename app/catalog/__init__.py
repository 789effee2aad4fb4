"""The catalog: GPUs, prices and storage prices (CSV files here) and model configs (models/)."""

from app.catalog.loader import load_catalog
from app.estimator.catalog_types import (
    GPU_ALIASES,
    Catalog,
    GpuSpec,
    PriceRow,
    StoragePrice,
    UnknownGpuError,
    UnknownProviderError,
)

__all__ = [
    "GPU_ALIASES",
    "Catalog",
    "GpuSpec",
    "PriceRow",
    "StoragePrice",
    "UnknownGpuError",
    "UnknownProviderError",
    "load_catalog",
]
