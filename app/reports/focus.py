"""FinOps FOCUS 1.2 export: one Usage charge per finished job that has a metered cost.

Rows are read through a server-side cursor in batches (`yield_per`) and written out batch by
batch, so memory stays flat whatever the row count. Values are only ever what was recorded: a
column is null when the job lacks the figure, never filled with a guess. Column definitions:
FOCUS specification v1.2, https://focus.finops.org (specification/columns/*.md).

Deviation, on purpose: FOCUS wants ProviderName non-null; a job run on a machine of our own
(no provider recorded) exports null there rather than an invented provider name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.models import Job, JobTag
from app.reports.filters import ReportFilters

FOCUS_VERSION = "1.2"
BATCH_ROWS = 2000  # rows per server-side fetch and per chunk written to the client
CURRENCY = "USD"  # every catalog price is in US dollars (app/catalog/prices.csv)
SERVICE_CATEGORY = "AI and Machine Learning"  # FOCUS ServiceCategory allowed value
SERVICE_NAME = "tunecost fine-tuning"
RESOURCE_TYPE = "Fine-tuning job"
CHARGE_CATEGORY = "Usage"
CHARGE_FREQUENCY = "Usage-Based"
GPU_HOURS_UNIT = "GPU-Hours"  # FOCUS unit format: <plural unit>-<time unit>, e.g. "GB-Hours"
# FOCUS PricingCategory: on-demand list price is "Standard"; spot is market-driven, "Dynamic".
PRICING_CATEGORY = {"on_demand": "Standard", "spot": "Dynamic"}

COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeFrequency",
    "ChargeDescription",
    "ServiceCategory",
    "ServiceName",
    "ProviderName",
    "PricingCategory",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "Tags",
    "x_EstimatedCost",
    "x_EstimatedGpuHours",
    "x_EstimateErrorPct",
    "x_Method",
    "x_Model",
    "x_Gpu",
    "x_NumGpus",
    "x_JobStatus",
    "x_Team",
)


def _tags_subquery(dialect: str) -> Any:
    agg = func.jsonb_object_agg if dialect == "postgresql" else func.json_group_object
    return (
        select(agg(JobTag.key, JobTag.value))
        .where(JobTag.job_id == Job.id)
        .correlate(Job)
        .scalar_subquery()
    )


def query(filters: ReportFilters, dialect: str) -> Select:
    """The jobs a FOCUS export covers: selected by `filters` and carrying a metered cost."""
    return (
        select(
            Job.id,
            Job.status,
            Job.method,
            Job.model_ref,
            Job.gpu,
            Job.num_gpus,
            Job.provider,
            Job.pricing,
            Job.team,
            Job.started_at,
            Job.finished_at,
            Job.price_per_gpu_hour,
            Job.act_cost_usd,
            Job.act_gpu_hours,
            Job.est_cost_usd,
            Job.est_gpu_hours,
            _tags_subquery(dialect).label("tags"),
        )
        .where(filters.where(), Job.act_cost_usd.is_not(None))
        .order_by(Job.finished_at, Job.id)
    )


def _when(value: datetime | None) -> str | None:
    """FOCUS date-time: ISO 8601 in UTC with a Z."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        return dict(json.loads(raw))
    return dict(raw)


def focus_row(r: Any) -> dict[str, Any]:
    """One job as a FOCUS charge record."""
    billed = float(r.act_cost_usd)
    price = r.price_per_gpu_hour
    consumed = r.act_gpu_hours
    # Billed GPU-hours can exceed the used ones (whole instances are rented): the quantity that
    # was priced is the one that, times the unit price, gives the bill.
    priced = billed / price if price else consumed
    # No negotiated or commitment discounts exist here: billed = effective = list = contracted.
    error = None
    if r.est_cost_usd is not None and billed > 0:
        error = (float(r.est_cost_usd) - billed) / billed * 100.0
    period_start = r.started_at or r.finished_at
    return {
        "BilledCost": billed,
        "EffectiveCost": billed,
        "ListCost": billed,
        "ContractedCost": billed,
        "ListUnitPrice": price,
        "ContractedUnitPrice": price,
        "BillingCurrency": CURRENCY,
        "ChargePeriodStart": _when(period_start),
        "ChargePeriodEnd": _when(r.finished_at),
        "ChargeCategory": CHARGE_CATEGORY,
        "ChargeClass": None,  # null: not a correction
        "ChargeFrequency": CHARGE_FREQUENCY,
        "ChargeDescription": (
            f"{r.method} fine-tune of {r.model_ref} on {r.num_gpus}x {r.gpu} "
            f"({r.pricing.replace('_', '-')}), job {r.status}"
        ),
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceName": SERVICE_NAME,
        "ProviderName": r.provider,
        "PricingCategory": PRICING_CATEGORY.get(r.pricing),
        "ResourceId": r.id,
        "ResourceName": f"{r.method} {r.model_ref}",
        "ResourceType": RESOURCE_TYPE,
        "ConsumedQuantity": consumed,
        "ConsumedUnit": GPU_HOURS_UNIT if consumed is not None else None,
        "PricingQuantity": priced,
        "PricingUnit": GPU_HOURS_UNIT if priced is not None else None,
        "Tags": _tags(r.tags),
        "x_EstimatedCost": r.est_cost_usd,
        "x_EstimatedGpuHours": r.est_gpu_hours,
        "x_EstimateErrorPct": error,
        "x_Method": r.method,
        "x_Model": r.model_ref,
        "x_Gpu": r.gpu,
        "x_NumGpus": r.num_gpus,
        "x_JobStatus": str(r.status),
        "x_Team": r.team,
    }


def iter_batches(session: Session, filters: ReportFilters) -> Iterator[list[dict[str, Any]]]:
    """FOCUS records in batches of BATCH_ROWS, fetched through a server-side cursor."""
    dialect = session.get_bind().dialect.name
    result = session.execute(query(filters, dialect), execution_options={"yield_per": BATCH_ROWS})
    for partition in result.partitions():
        yield [focus_row(r) for r in partition]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


def render_csv(batches: Iterator[list[dict[str, Any]]]) -> Iterator[str]:
    """CSV text, the header first, then one chunk per batch; null is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_csv_cell(rec[c]) for c in COLUMNS] for rec in batch)
        yield buffer.getvalue()


def render_json(batches: Iterator[list[dict[str, Any]]]) -> Iterator[str]:
    """One JSON document, `{"focus_version": ..., "rows": [...]}`, written batch by batch."""
    yield json.dumps({"focus_version": FOCUS_VERSION})[:-1] + ', "rows": ['
    first = True
    for batch in batches:
        if not batch:
            continue
        text = ",\n".join(json.dumps(rec, separators=(",", ":")) for rec in batch)
        yield ("\n" if first else ",\n") + text
        first = False
    yield "\n]}\n"
