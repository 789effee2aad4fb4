"""Lambda Cloud API instance types (GET /api/v1/instance-types): a GPU cloud's per-instance list.

Format: Lambda Cloud API reference, "List available instance types"
(https://docs.lambda.ai/api/cloud#listInstanceTypes): `{"data": {name: {"instance_type":
{"name", "description", "gpu_description", "price_cents_per_hour", "specs": {"vcpus",
"memory_gib", "storage_gib", "gpus"}}, "regions_with_capacity_available": [...]}}}`. Lambda has
one on-demand price per instance type for every region, and no spot tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.catalog.prices.importers.common import check_rows, instances_of, need, per_gpu_row, usd
from app.estimator.catalog_types import PriceRow

PROVIDER = "lambda"
CENTS = 100
ANY_REGION = "us"  # one price in every Lambda region; the seed names the region "us" too


def parse(doc: Mapping[str, Any], *, fetched_at: datetime, source: str) -> list[PriceRow]:
    """Per-GPU rows of every mapped instance type; raises `PriceImportError`."""
    data = need(doc, "data", dict, "answer")
    known = instances_of(PROVIDER)
    rows: list[PriceRow] = []
    for name, entry in data.items():
        where = f"data.{name}"
        spec = need(entry, "instance_type", dict, where)
        if need(spec, "name", str, f"{where}.instance_type") not in known:
            continue
        cents = need(spec, "price_cents_per_hour", (int, float), f"{where}.instance_type")
        gpus = need(need(spec, "specs", dict, f"{where}.instance_type"), "gpus", int, where)
        rows.append(
            per_gpu_row(
                item=known[spec["name"]],
                instance_usd_per_hour=usd(cents, where) / CENTS,
                gpus=gpus,
                pricing="on_demand",
                region=ANY_REGION,
                fetched_at=fetched_at,
                where=where,
                source=f"{source} (Lambda Cloud API instance-types, {spec['name']})",
            )
        )
    return check_rows(rows, PROVIDER)
