"""The FOCUS 1.2 columns of a job's charge record, each an SQL expression over the jobs table.

Column definitions: FOCUS specification v1.2 (specification/columns/*.md in the FinOps
Foundation's FOCUS_Spec repository). Every Mandatory column is present; of the Conditional ones,
those the service can fill honestly: region, SKU, sub-account (the job's team, its tenant),
resource, tags, usage quantities, and the commitment-discount columns (from the rate card line
that priced the job's estimate, app/catalog/prices/ratecard.py; null without one). Costs follow the
job's provenance (app/jobs/provenance.py) and the contracted rate, if any:

| provenance  | BilledCost      | EffectiveCost             | ListCost        | ContractedCost  |
| cloud       | at the contract | at the contract           | metered at list | at the contract |
| self_hosted | 0               | GPU-hours x internal rate | reference price | at the contract |
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, String, case, cast, func, literal, literal_column, null

from app.catalog.providers import PROVIDER_NAMES
from app.config import Settings
from app.models import CostSource, Job

# The jobs table, or a subquery with its columns (aliased(Job, subquery)) to compute over.
JobTable = type[Job]

CURRENCY = "USD"  # every catalog price is in US dollars (app/catalog/prices.csv)
SERVICE_CATEGORY = "AI and Machine Learning"  # FOCUS ServiceCategory allowed value
# FOCUS 1.2 ServiceSubcategory under "AI and Machine Learning": "Creation, training, and
# deployment of statistical algorithms that learn from and perform tasks based on data."
SERVICE_SUBCATEGORY = "Machine Learning"
SERVICE_NAME = "tunecost fine-tuning"
RESOURCE_TYPE = "Fine-tuning job"
CHARGE_CATEGORY = "Usage"
CHARGE_FREQUENCY = "Usage-Based"
GPU_HOURS_UNIT = "GPU-Hours"  # FOCUS unit format: <plural unit>-<time unit>, e.g. "GB-Hours"
SELF_HOSTED_SKU = "self-hosted"  # SkuId prefix of own hardware (the device kind follows)
# FOCUS PricingCategory: on-demand list price is "Standard"; spot is market-driven, "Dynamic".
PRICING_CATEGORY = {"on_demand": "Standard", "spot": "Dynamic", "committed": "Committed"}
# A rate-card line with a commitment id (app/catalog/prices/ratecard.py) is a negotiated spend
# commitment: FOCUS CommitmentDiscountCategory "Spend", its quantity in the billing currency.
COMMITMENT_CATEGORY = "Spend"
COMMITMENT_TYPE = "Rate card"
COMMITMENT_STATUS = "Used"
PG_ISO = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'  # to_char pattern of FOCUS date-times (UTC, with Z)
SQLITE_ISO = "%Y-%m-%dT%H:%M:%SZ"
# What the record reads from the job's estimate snapshot (frozen at submit from the rate card).
CONTRACTED_PRICE = "contracted_price_per_gpu_hour"
COMMITMENT_ID = "commitment_id"
SNAPSHOT_FIELDS = (CONTRACTED_PRICE, COMMITMENT_ID)
COMMITMENT_COLUMNS = (
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
)

COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "BillingCurrency",
    "BillingAccountId",
    "BillingAccountName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeFrequency",
    "ChargeDescription",
    "InvoiceIssuerName",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceSubcategory",
    "ServiceName",
    "PricingCategory",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    *COMMITMENT_COLUMNS,
    "Tags",
    "x_CostSource",
    "x_ListCostReference",
    "x_InternalUnitPrice",
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


def const(value: str) -> Any:
    """A text literal."""
    return literal(value, String)


def iso(dialect: str, column: Any) -> Any:
    """A timestamptz column as FOCUS date-time text (UTC, `Z`)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), PG_ISO, type_=String)
    return func.strftime(SQLITE_ISO, column, type_=String)


def billing_period(dialect: str, column: Any) -> tuple[Any, Any]:
    """(start, end) of the UTC calendar month holding `column`, as FOCUS date-time text."""
    if dialect == "postgresql":
        month = func.date_trunc(literal_column("'month'"), func.timezone("UTC", column))
        following = month + literal_column("interval '1 month'")
        return func.to_char(month, PG_ISO, type_=String), func.to_char(
            following, PG_ISO, type_=String
        )
    start = func.strftime(SQLITE_ISO, column, "start of month", type_=String)
    return start, func.strftime(SQLITE_ISO, column, "start of month", "+1 month", type_=String)


def is_cloud(job: JobTable = Job) -> Any:
    """Whether a provider invoices the job's device time."""
    return job.cost_source == CostSource.CLOUD.value


def pricing_quantity(job: JobTable = Job) -> Any:
    """Priced GPU-hours: billed ones can exceed those used (whole instances rented)."""
    price = job.price_per_gpu_hour
    return case((price > 0, job.act_cost_usd / price), else_=job.act_gpu_hours)


def contracted_unit_price(job: JobTable = Job) -> Any:
    """The rate card's $/GPU-hour frozen on the job's estimate, else the list price."""
    rate = job.estimate_snapshot[CONTRACTED_PRICE].as_float()
    return func.coalesce(rate, job.price_per_gpu_hour)


def contracted_cost(job: JobTable = Job) -> Any:
    """The metered cost at the contracted rate (the list cost when no rate card applied)."""
    price = job.price_per_gpu_hour
    at_contract = job.act_cost_usd * contracted_unit_price(job) / price
    return case((price > 0, at_contract), else_=job.act_cost_usd)


def commitment_id(job: JobTable = Job) -> Any:
    """The rate card line's commitment id frozen on the job's estimate (null: none)."""
    return job.estimate_snapshot[COMMITMENT_ID].as_string()


def billed_cost(job: JobTable = Job) -> Any:
    """What an invoice charges: the metered cost at the contracted rate when cloud-billed."""
    return case((is_cloud(job), contracted_cost(job)), else_=literal(0.0, Float))


def effective_cost(job: JobTable = Job) -> Any:
    """The cost to the organisation: cloud = billed; self-hosted = GPU-hours x internal rate."""
    internal = func.coalesce(job.act_gpu_hours, 0.0) * func.coalesce(
        job.internal_usd_per_gpu_hour, 0.0
    )
    return case((is_cloud(job), contracted_cost(job)), else_=internal)


def _provider_name(settings: Settings, job: JobTable) -> Any:
    display = case(
        *((job.billing_provider == k, const(v)) for k, v in PROVIDER_NAMES.items()),
        else_=job.billing_provider,
    )
    return case((is_cloud(job), display), else_=const(settings.focus_self_hosted_name))


def _description(job: JobTable) -> Any:
    source = case(
        (is_cloud(job), const(", billed by ") + job.billing_provider),
        (
            job.cost_source == CostSource.SELF_HOSTED.value,
            const(", self-hosted; list price of ") + job.list_price_reference,
        ),
    )
    return (
        job.method
        + " fine-tune of "
        + job.model_ref
        + " on "
        + cast(job.num_gpus, String)
        + "x "
        + job.gpu
        + " ("
        + func.replace(job.pricing, "_", "-")
        + func.coalesce(source, "")
        + "), job "
        + job.status
    )


def _sku_id(job: JobTable) -> Any:
    cloud = job.billing_provider + "/" + func.coalesce(job.sku, job.gpu)
    return case((is_cloud(job), cloud), else_=const(SELF_HOSTED_SKU + "/") + job.gpu)


def columns(
    dialect: str, tags: Any, settings: Settings, job: JobTable = Job
) -> list[tuple[str, Any]]:
    """(column name, SQL expression) of a FOCUS record, in COLUMNS order."""
    billed = job.act_cost_usd
    price = job.price_per_gpu_hour
    priced = pricing_quantity(job)
    error = case(
        (
            job.est_cost_usd.is_not(None) & (billed > 0),
            (job.est_cost_usd - billed) / billed * 100.0,
        )
    )
    pricing_category = case(*((job.pricing == k, const(v)) for k, v in PRICING_CATEGORY.items()))
    period_start, period_end = billing_period(dialect, job.finished_at)
    provider = _provider_name(settings, job)
    sku = _sku_id(job)
    gpu_hours_unit = case((job.act_gpu_hours.is_not(None), const(GPU_HOURS_UNIT)))
    exprs = (
        cast(billed_cost(job), Float),
        cast(effective_cost(job), Float),
        billed,  # ListCost: the metered GPU-hours at the (reference) list price
        contracted_cost(job),  # ContractedCost: at the rate card's rate, else the list price
        price,  # ListUnitPrice
        contracted_unit_price(job),  # ContractedUnitPrice
        const(CURRENCY),
        const(settings.focus_billing_account_id),
        const(settings.focus_billing_account_name),
        period_start,
        period_end,
        iso(dialect, func.coalesce(job.started_at, job.finished_at)),
        iso(dialect, job.finished_at),
        const(CHARGE_CATEGORY),
        cast(null(), String),  # ChargeClass: null, not a correction
        const(CHARGE_FREQUENCY),
        _description(job),
        provider,  # InvoiceIssuerName: whoever bills, the provider or the organisation
        provider,  # ProviderName
        provider,  # PublisherName: the GPU time is the provider's (or your own) product
        const(SERVICE_CATEGORY),
        const(SERVICE_SUBCATEGORY),
        const(SERVICE_NAME),
        pricing_category,
        job.region,
        job.region,  # RegionName: the catalog knows region ids only
        job.id,
        job.method + " " + job.model_ref,
        const(RESOURCE_TYPE),
        sku,
        sku + "/" + job.pricing,  # SkuPriceId: the SKU at one pricing category
        job.team,  # SubAccountId: the job's tenant
        job.team,  # SubAccountName
        job.act_gpu_hours,  # ConsumedQuantity
        gpu_hours_unit,
        priced,
        case((priced.is_not(None), const(GPU_HOURS_UNIT))),
        *_commitment(job),
        tags,
        job.cost_source,
        job.list_price_reference,
        job.internal_usd_per_gpu_hour,
        job.est_cost_usd,
        job.est_gpu_hours,
        error,
        job.method,
        job.model_ref,
        job.gpu,
        job.num_gpus,
        job.status,
        job.team,
    )
    return list(zip(COLUMNS, exprs, strict=True))


def _commitment(job: JobTable) -> tuple[Any, ...]:
    """The COMMITMENT_COLUMNS: filled when a rate card line with a commitment id priced the job."""
    cid = commitment_id(job)
    committed = cid.is_not(None)
    return (
        case((committed, const(COMMITMENT_CATEGORY))),
        cid,
        cid,  # CommitmentDiscountName: the contract is known by its id
        case((committed, cast(contracted_cost(job), Float))),
        case((committed, const(COMMITMENT_STATUS))),
        case((committed, const(COMMITMENT_TYPE))),
        case((committed, const(CURRENCY))),
    )
