"""Response bodies of the report routes. Errors are (estimate - actual) / actual: + = over."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.kit.instants import UtcInstant

Bucket = Literal["day", "week", "month"]
Format = Literal["json", "csv"]
ReportSource = Literal["rollups", "rows"]
SOURCE_DOC = (
    "rollups: the window's whole UTC days and months read from daily and monthly rollups, "
    "only its partial edge days from the jobs; rows: every selected job read, because a filter "
    "(on a job column other than method, status, team or the grouped one, on a tag other than "
    "the grouped one) or group_by=job needs them. The figures are the same either way."
)


class QuantityError(BaseModel):
    """Estimate against actual for one quantity, over the jobs that have both."""

    n: int = Field(description="jobs with both an estimate and an actual for this quantity")
    estimated: float | None = Field(description="sum (cost, GPU-hours) or mean (peak bytes)")
    actual: float | None
    mean_error: float | None = Field(description="mean of estimate - actual, in the unit")
    mean_pct_error: float | None = Field(description="signed mean of (est - act) / act, in %")
    mape_pct: float | None = Field(description="mean absolute percentage error, in %")


class PeakCompared(BaseModel):
    """What `peak_bytes` compared, like with like: how many jobs of each kind."""

    allocated: int = Field(
        description="GPU jobs: torch.cuda.max_memory_allocated against the estimate's "
        "allocated_bytes"
    )
    per_gpu: int = Field(
        description="CPU jobs (peak resident set) and jobs estimated before allocated_bytes "
        "was stored: against the estimate's per_gpu_bytes (what must fit)"
    )


class ReportRow(BaseModel):
    """One group of the estimate-vs-actual report."""

    group: str | None = Field(description="the group's value; null = jobs without it")
    jobs: int
    spend_usd: float = Field(
        description="metered cost of every job in the group at the (reference) list price"
    )
    billed_usd: float = Field(description="what providers invoice: 0 for self-hosted jobs")
    effective_usd: float = Field(description="cost to you: billed, or self-hosted internal rate")
    cost_usd: QuantityError
    gpu_hours: QuantityError
    peak_bytes: QuantityError = Field(
        description="peak memory: each job's metered peak against the estimate of the same "
        "quantity (peak_compared says which)"
    )
    peak_compared: PeakCompared


class EstimateVsActualReport(BaseModel):
    """Estimate error per group, with the totals over every job the filters select."""

    group_by: str
    filters: dict[str, Any]
    rows: list[ReportRow]
    total: ReportRow
    truncated: bool = Field(description="more groups exist than `limit` returned")
    source: ReportSource = Field(description=SOURCE_DOC)


class SpendRow(BaseModel):
    """Actual spend of one group in one time bucket."""

    bucket_start: str = Field(description="first day of the bucket (UTC), YYYY-MM-DD")
    group: str | None
    jobs: int
    spend_usd: float = Field(description="metered cost at the (reference) list price")
    billed_usd: float = Field(description="what providers invoice: 0 for self-hosted jobs")
    effective_usd: float = Field(description="cost to you: billed, or self-hosted internal rate")
    gpu_hours: float
    estimated_cost_usd: float


class SpendReport(BaseModel):
    """Spend over time: one row per (bucket, group), in time order."""

    bucket: Bucket
    group_by: str
    filters: dict[str, Any]
    rows: list[SpendRow]
    truncated: bool
    source: ReportSource = Field(description=SOURCE_DOC)


QUANTITY_FIELDS = ("n", "estimated", "actual", "mean_error", "mean_pct_error", "mape_pct")
QUANTITIES = ("cost_usd", "gpu_hours", "peak_bytes")
PEAK_COMPARED = tuple(PeakCompared.model_fields)  # the CSV's peak_compared_<kind> columns


def flat_row(row: ReportRow) -> dict[str, Any]:
    """A report row as one flat record (the CSV columns)."""
    out: dict[str, Any] = {
        "group": row.group,
        "jobs": row.jobs,
        "spend_usd": row.spend_usd,
        "billed_usd": row.billed_usd,
        "effective_usd": row.effective_usd,
    }
    for quantity in QUANTITIES:
        err: QuantityError = getattr(row, quantity)
        for name in QUANTITY_FIELDS:
            out[f"{quantity}_{name}"] = getattr(err, name)
    for kind in PEAK_COMPARED:
        out[f"peak_compared_{kind}"] = getattr(row.peak_compared, kind)
    return out


def flat_columns() -> list[str]:
    """The CSV header of the estimate-vs-actual report."""
    cols = ["group", "jobs", "spend_usd", "billed_usd", "effective_usd"]
    cols += [f"{q}_{name}" for q in QUANTITIES for name in QUANTITY_FIELDS]
    cols += [f"peak_compared_{kind}" for kind in PEAK_COMPARED]
    return cols


PeriodKind = Literal["month", "quarter", "custom"]


class ForecastPeriod(BaseModel):
    """The period forecast: a UTC month or quarter, or custom dates; `end` is exclusive."""

    kind: PeriodKind
    start: UtcInstant
    end: UtcInstant


class ForecastRow(BaseModel):
    """One group's spend in the period and its projection to the period's end (USD)."""

    group: str | None = Field(description="the group's value; null = no grouping or no value")
    spent_usd: float = Field(description="jobs finished in the period, metered at list price")
    accrued_usd: float = Field(description="jobs queued or running now: their attempts so far")
    committed_usd: float = Field(
        description="the rest of their estimates (min(estimate, max_cost_usd) - accrued)"
    )
    committed_low_usd: float = Field(description="committed at each estimate's low factor")
    committed_high_usd: float = Field(description="committed at each estimate's high factor")
    finished_jobs: int
    active_jobs: int
    daily_rate_usd: float = Field(description="spend of jobs finished in the last week, per day")
    projected_usd: float = Field(description="spent + accrued + committed + daily rate x days left")
    projected_low_usd: float = Field(description="the projection with committed at its low")
    projected_high_usd: float = Field(description="the projection with committed at its high")


class ForecastReport(BaseModel):
    """A period's spend, accrued and committed cost, and its projection, per group and total."""

    period: ForecastPeriod
    as_of: UtcInstant = Field(description="the instant the forecast was made")
    days_elapsed: float
    days_left: float
    rate_window_days: float = Field(description="days of finished spend the daily rate averages")
    group_by: str
    filters: dict[str, Any]
    rows: list[ForecastRow]
    total: ForecastRow
