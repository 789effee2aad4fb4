"""Cost provenance: who pays for a job's device time, decided by the worker that claims it.

A worker is cloud-billed (a provider invoices its GPU time: billed = the metered cost at the
provider's price) or self-hosted (own hardware: nothing is invoiced, the effective cost is an
internal rate per device-hour, and the list cost is what the reference cloud offer would have
charged). `TUNECOST_WORKER_COST_SOURCE` says which; unset, a CPU worker is self-hosted and a GPU
worker is billed by the provider its jobs were priced at.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.estimator.catalog_types import (
    Catalog,
    GpuSpec,
    PriceRow,
    UnknownGpuError,
    UnknownProviderError,
)
from app.models import CostSource

# Default internal rate of a self-hosted device: the energy it draws at its rated power.
# US average retail electricity price for commercial customers, 2024: about 13 US cents per kWh
# (EIA Electric Power Monthly, table 5.6.A).
ELECTRICITY_USD_PER_KWH = 0.13
# The catalog's CPU box has no TDP (0 W): a loaded single-socket 16-vCPU server draws ~150 W
# (SPECpower_ssj2008 published results for such servers: roughly 100-200 W at full load).
CPU_BOX_WATTS = 150.0


@dataclass(frozen=True)
class Provenance:
    """The provenance columns of a job (app/models/job.py)."""

    cost_source: CostSource
    billing_provider: str | None
    internal_usd_per_gpu_hour: float | None
    region: str | None
    sku: str | None
    list_price_reference: str | None


def default_internal_rate(gpu: GpuSpec) -> float:
    """USD per device-hour of the device's energy at its rated power."""
    watts = gpu.tdp_watts if gpu.tdp_watts > 0 else CPU_BOX_WATTS
    return round(watts / 1000.0 * ELECTRICITY_USD_PER_KWH, 6)


def _offer(catalog: Catalog, *, gpu: str, provider: str | None, pricing: str) -> PriceRow | None:
    if provider is None:
        return None
    try:
        rows = catalog.prices_for(gpu, provider=provider, pricing=pricing)  # type: ignore[arg-type]  # a stored job's pricing: a PricingKind the estimate validated
    except (UnknownGpuError, UnknownProviderError):
        return None
    return rows[0] if rows else None


def reference_text(offer: PriceRow | None, *, gpu: str, provider: str | None, pricing: str) -> str:
    """Which cloud price the list cost comes from, e.g. `aws c5.4xlarge on_demand us-east-1`."""
    if offer is None:
        return f"{provider or 'no provider'} {gpu} {pricing}"
    parts = [offer.provider, offer.instance or offer.gpu, offer.pricing, offer.region]
    return " ".join(p for p in parts if p) + f" (as of {offer.as_of.isoformat()})"


def decide(
    *, settings: Settings, catalog: Catalog, gpu: str, provider: str | None, pricing: str
) -> Provenance:
    """The provenance of a job on `gpu`, priced at `provider`/`pricing`, run by this worker."""
    try:
        spec: GpuSpec | None = catalog.gpu(gpu)
    except UnknownGpuError:
        spec = None
    source = settings.worker_cost_source
    if source is None:
        source = "self_hosted" if spec is None or spec.is_cpu else "cloud"
    billing = settings.worker_billing_provider or provider
    offer = _offer(catalog, gpu=gpu, provider=provider, pricing=pricing)
    reference = reference_text(offer, gpu=gpu, provider=provider, pricing=pricing)
    sku = offer.instance if offer is not None and offer.instance else None
    if source == "cloud" and billing is not None:
        region = settings.worker_region or (offer.region if offer and offer.region else None)
        return Provenance(CostSource.CLOUD, billing, None, region, sku, reference)
    rate = settings.internal_rate_usd_per_gpu_hour
    if rate is None:
        rate = default_internal_rate(spec) if spec is not None else 0.0
    return Provenance(CostSource.SELF_HOSTED, None, rate, settings.worker_region, sku, reference)
