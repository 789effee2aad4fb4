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
        return func.to_char(func.timezone("UTC", column), PG_ISO)
    return func.strftime(SQLITE_ISO, column)


def billing_period(dialect: str, column: Any) -> tuple[Any, Any]:
    """(start, end) of the UTC calendar month holding `column`, as FOCUS date-time text."""
    if dialect == "postgresql":
        month = func.date_trunc(literal_column("'month'"), func.timezone("UTC", column))
        following = month + literal_column("interval '1 month'")
        return func.to_char(month, PG_ISO), func.to_char(following, PG_ISO)
    start = func.strftime(SQLITE_ISO, column, "start of month")
    return start, func.strftime(SQLITE_ISO, column, "start of month", "+1 month")


def is_cloud() -> Any:
    """Whether a provider invoices the job's device time."""
    return Job.cost_source == CostSource.CLOUD.value


def pricing_quantity() -> Any:
    """Priced GPU-hours: billed ones can exceed those used (whole instances rented)."""
    price = Job.price_per_gpu_hour
    return case((price > 0, Job.act_cost_usd / price), else_=Job.act_gpu_hours)


def contracted_unit_price() -> Any:
    """The rate card's $/GPU-hour frozen on the job's estimate, else the list price."""
    rate = Job.estimate_snapshot["contracted_price_per_gpu_hour"].as_float()
    return func.coalesce(rate, Job.price_per_gpu_hour)


def contracted_cost() -> Any:
    """The metered cost at the contracted rate (the list cost when no rate card applied)."""
    price = Job.price_per_gpu_hour
    at_contract = Job.act_cost_usd * contracted_unit_price() / price
    return case((price > 0, at_contract), else_=Job.act_cost_usd)


def commitment_id() -> Any:
    """The rate card line's commitment id frozen on the job's estimate (null: none)."""
    return Job.estimate_snapshot["commitment_id"].as_string()


def billed_cost() -> Any:
    """What an invoice charges: the metered cost at the contracted rate when cloud-billed."""
    return case((is_cloud(), contracted_cost()), else_=literal(0.0, Float))


def effective_cost() -> Any:
    """The cost to the organisation: cloud = billed; self-hosted = GPU-hours x internal rate."""
    internal = func.coalesce(Job.act_gpu_hours, 0.0) * func.coalesce(
        Job.internal_usd_per_gpu_hour, 0.0
    )
    return case((is_cloud(), contracted_cost()), else_=internal)


def _provider_name(settings: Settings) -> Any:
    display = case(
        *((Job.billing_provider == k, const(v)) for k, v in PROVIDER_NAMES.items()),
        else_=Job.billing_provider,
    )
    return case((is_cloud(), display), else_=const(settings.focus_self_hosted_name))


def _description() -> Any:
    source = case(
        (is_cloud(), const(", billed by ") + Job.billing_provider),
        (
            Job.cost_source == CostSource.SELF_HOSTED.value,
            const(", self-hosted; list price of ") + Job.list_price_reference,
        ),
    )
    return (
        Job.method
        + " fine-tune of "
        + Job.model_ref
        + " on "
        + cast(Job.num_gpus, String)
        + "x "
        + Job.gpu
        + " ("
        + func.replace(Job.pricing, "_", "-")
        + func.coalesce(source, "")
        + "), job "
        + Job.status
    )


def _sku_id() -> Any:
    cloud = Job.billing_provider + "/" + func.coalesce(Job.sku, Job.gpu)
    return case((is_cloud(), cloud), else_=const(SELF_HOSTED_SKU + "/") + Job.gpu)


def columns(dialect: str, tags: Any, settings: Settings) -> list[tuple[str, Any]]:
    """(column name, SQL expression) of a FOCUS record, in COLUMNS order."""
    billed = Job.act_cost_usd
    price = Job.price_per_gpu_hour
    priced = pricing_quantity()
    error = case(
        (
            Job.est_cost_usd.is_not(None) & (billed > 0),
            (Job.est_cost_usd - billed) / billed * 100.0,
        )
    )
    pricing_category = case(*((Job.pricing == k, const(v)) for k, v in PRICING_CATEGORY.items()))
    period_start, period_end = billing_period(dialect, Job.finished_at)
    provider = _provider_name(settings)
    sku = _sku_id()
    gpu_hours_unit = case((Job.act_gpu_hours.is_not(None), const(GPU_HOURS_UNIT)))
    exprs = (
        cast(billed_cost(), Float),
        cast(effective_cost(), Float),
        billed,  # ListCost: the metered GPU-hours at the (reference) list price
        contracted_cost(),  # ContractedCost: at the rate card's rate, else the list price
        price,  # ListUnitPrice
        contracted_unit_price(),  # ContractedUnitPrice
        const(CURRENCY),
        const(settings.focus_billing_account_id),
        const(settings.focus_billing_account_name),
        period_start,
        period_end,
        iso(dialect, func.coalesce(Job.started_at, Job.finished_at)),
        iso(dialect, Job.finished_at),
        const(CHARGE_CATEGORY),
        cast(null(), String),  # ChargeClass: null, not a correction
        const(CHARGE_FREQUENCY),
        _description(),
        provider,  # InvoiceIssuerName: whoever bills, the provider or the organisation
        provider,  # ProviderName
        provider,  # PublisherName: the GPU time is the provider's (or your own) product
        const(SERVICE_CATEGORY),
        const(SERVICE_SUBCATEGORY),
        const(SERVICE_NAME),
        pricing_category,
        Job.region,
        Job.region,  # RegionName: the catalog knows region ids only
        Job.id,
        Job.method + " " + Job.model_ref,
        const(RESOURCE_TYPE),
        sku,
        sku + "/" + Job.pricing,  # SkuPriceId: the SKU at one pricing category
        Job.team,  # SubAccountId: the job's tenant
        Job.team,  # SubAccountName
        Job.act_gpu_hours,  # ConsumedQuantity
        gpu_hours_unit,
        priced,
        case((priced.is_not(None), const(GPU_HOURS_UNIT))),
        *_commitment(),
        tags,
        Job.cost_source,
        Job.list_price_reference,
        Job.internal_usd_per_gpu_hour,
        Job.est_cost_usd,
        Job.est_gpu_hours,
        error,
        Job.method,
        Job.model_ref,
        Job.gpu,
        Job.num_gpus,
        Job.status,
        Job.team,
    )
    return list(zip(COLUMNS, exprs, strict=True))


def _commitment() -> tuple[Any, ...]:
    """The COMMITMENT_COLUMNS: filled when a rate card line with a commitment id priced the job."""
    cid = commitment_id()
    committed = cid.is_not(None)
    return (
        case((committed, const(COMMITMENT_CATEGORY))),
        cid,
        cid,  # CommitmentDiscountName: the contract is known by its id
        case((committed, cast(contracted_cost(), Float))),
        case((committed, const(COMMITMENT_STATUS))),
        case((committed, const(COMMITMENT_TYPE))),
        case((committed, const(CURRENCY))),
    )
