"""Catalog routes: GPUs, models and prices (read scope); price overrides (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.auth.deps import AdminPrincipal, ReadPrincipal
from app.catalog import service
from app.catalog.schemas import (
    PROVIDER_PATTERN,
    GpuList,
    ModelDetail,
    ModelList,
    PriceCleared,
    PriceIn,
    PriceList,
    PriceSet,
)
from app.config import get_settings
from app.db import SessionDep
from app.estimator.spec import Pricing

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


@router.get("/gpus", response_model=GpuList)
def list_gpus(session: SessionDep, _: ReadPrincipal) -> GpuList:
    """Every GPU the estimator knows, with memory, peak throughput and bandwidth."""
    catalog = service.effective_catalog(session)
    return GpuList(
        catalog_version=catalog.version,
        gpus=service.gpu_out(catalog),
        aliases=dict(service.aliases()),
    )


@router.get("/models", response_model=ModelList)
def list_models(_: ReadPrincipal) -> ModelList:
    """The catalog's model ids (usable as `model` in an estimate) and their config shapes."""
    return ModelList(models=service.model_out())


@router.get("/models/{model_id:path}", response_model=ModelDetail)
def get_model(model_id: str, _: ReadPrincipal) -> ModelDetail:
    """One catalog model with exact parameter counts; unknown ids get close matches."""
    return service.model_detail(model_id=model_id)


@router.get("/prices", response_model=PriceList)
def list_prices(
    session: SessionDep,
    _: ReadPrincipal,
    gpu: Annotated[str | None, Query(max_length=64)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    pricing: Pricing | None = None,
) -> PriceList:
    """Effective $/GPU-hour, cheapest first, with as-of date, source and origin."""
    catalog = service.effective_catalog(session)
    max_age = get_settings().price_max_age_days
    return PriceList(
        catalog_version=catalog.version,
        price_max_age_days=max_age,
        prices=service.price_out(
            catalog, gpu=gpu, provider=provider, pricing=pricing, max_age_days=max_age
        ),
    )


@router.put("/prices/{provider}/{gpu}", response_model=PriceSet)
def set_price(
    provider: Annotated[str, Path(pattern=PROVIDER_PATTERN)],
    gpu: Annotated[str, Path(max_length=64)],
    price_in: PriceIn,
    session: SessionDep,
    principal: AdminPrincipal,
) -> PriceSet:
    """Set a negotiated rate; the catalog version advances and later estimates use it."""
    price, version, when = service.set_price(
        session,
        provider=provider,
        gpu=gpu,
        pricing=price_in.pricing,
        usd_per_gpu_hour=price_in.usd_per_gpu_hour,
        principal=principal,
        max_age_days=get_settings().price_max_age_days,
    )
    return PriceSet(catalog_version=version, price=price, set_at=when)


@router.delete("/prices/{provider}/{gpu}", response_model=PriceCleared)
def clear_price(
    provider: Annotated[str, Path(pattern=PROVIDER_PATTERN)],
    gpu: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    principal: AdminPrincipal,
    pricing: Pricing = "on_demand",
) -> PriceCleared:
    """Remove a negotiated rate; the listed price applies again and the version advances."""
    version = service.clear_price(
        session, provider=provider, gpu=gpu, pricing=pricing, principal=principal
    )
    return PriceCleared(catalog_version=version)
