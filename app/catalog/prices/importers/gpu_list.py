"""tunecost's per-GPU price list: for GPU clouds that publish prices per GPU-hour but no API.

Format (defined here, documented in tests/prices/samples/README.md): `{"format":
"tunecost-gpu-prices/1", "provider": "runpod", "prices": [{"gpu", "pricing", "usd_per_gpu_hour",
"region", "instance", "gpus_per_instance"}]}`; `gpu` is a catalog id or alias, `pricing` one of
on_demand / spot / committed, `gpus_per_instance` (default 1) the smallest number rented at once,
and the per-GPU price is taken as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.catalog.loader import load_catalog
from app.catalog.prices.importers.common import (
    MAX_INSTANCE_CHARS,
    MAX_REGION_CHARS,
    PriceImportError,
    check_rows,
    gpu_hour_price,
    need,
    stored_name,
    usd,
)
from app.estimator.catalog_types import PRICING_KINDS, PriceRow, UnknownGpuError

FORMAT = "tunecost-gpu-prices/1"
PROVIDER_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


def parse(doc: Mapping[str, Any], *, fetched_at: datetime, source: str) -> list[PriceRow]:
    """One row per listed price; raises `PriceImportError` at the first bad entry."""
    if need(doc, "format", str, "list") != FORMAT:
        raise PriceImportError(
            f"list: format is {doc['format']!r}, expected {FORMAT!r}"[:400], field="format"
        )
    provider = need(doc, "provider", str, "list")
    if not provider or not set(provider) <= PROVIDER_CHARS or len(provider) > 64:
        raise PriceImportError(
            f"list.provider {provider[:80]!r}: lowercase letters, digits, _ and -",
            field="provider",
        )
    catalog = load_catalog()
    rows = []
    for i, entry in enumerate(need(doc, "prices", list, "list")):
        where = f"prices[{i}]"
        try:
            gpu = catalog.resolve_gpu_id(need(entry, "gpu", str, where))
        except UnknownGpuError as exc:
            raise PriceImportError(f"{where}.gpu: {exc}", field=f"{where}.gpu") from None
        pricing = next((k for k in PRICING_KINDS if k == entry.get("pricing")), None)
        if pricing is None:
            raise PriceImportError(
                f"{where}.pricing: one of {', '.join(PRICING_KINDS)}", field=f"{where}.pricing"
            )
        per = entry.get("gpus_per_instance", 1)
        if not isinstance(per, int) or isinstance(per, bool) or per < 1:
            raise PriceImportError(
                f"{where}.gpus_per_instance: a whole number of at least 1",
                field=f"{where}.gpus_per_instance",
            )
        rows.append(
            PriceRow(
                provider=provider,
                gpu=gpu,
                pricing=pricing,
                usd_per_gpu_hour=gpu_hour_price(
                    usd(need(entry, "usd_per_gpu_hour", (int, float), where), where),
                    f"{where}.usd_per_gpu_hour",
                ),
                as_of=fetched_at.date(),
                source=f"{source} ({FORMAT})",
                instance=stored_name(
                    _text(entry, "instance"),
                    what="instance",
                    max_chars=MAX_INSTANCE_CHARS,
                    where=f"{where}.instance",
                ),
                gpus_per_instance=per,
                region=stored_name(
                    _text(entry, "region"),
                    what="region",
                    max_chars=MAX_REGION_CHARS,
                    where=f"{where}.region",
                ),
                origin="import",
            )
        )
    return check_rows(rows, provider)


def _text(entry: Mapping[str, Any], key: str) -> str:
    """An optional text field of an entry, as text ("" when absent)."""
    return str(entry.get(key, ""))
