"""The effective catalog (data files + admin price overrides) and the admin price override.

The files are read once per process (`load_catalog`). Per request only the newest catalog
version id is read (one indexed query); overrides are re-read only when that id has moved, which
happens in the same transaction that changes an override.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.catalog import Catalog, PriceRow, UnknownGpuError, load_catalog
from app.catalog.model_catalog import catalog_model_ids, get_model_config
from app.catalog.prices import service as prices_service
from app.catalog.prices.staleness import age_days, is_stale
from app.catalog.resolve import resolve_model
from app.catalog.schemas import GpuOut, ModelDetail, ModelOut, PriceOut
from app.errors import Conflict, InvalidInput, NotFound
from app.estimator.catalog_types import GPU_ALIASES, PRICING_KINDS
from app.models import CatalogVersion, PriceOverride
from app.models.base import utcnow

log = logging.getLogger(__name__)

OVERRIDE_SOURCE = "admin override"
_lock = threading.Lock()
_effective: tuple[int, Catalog] | None = None


# Every price import, override and rate card makes a new version; asked on every estimate
# (built once: SQLAlchemy reuses its compiled form).
NEWEST_VERSION = select(func.max(CatalogVersion.id))


def current_version(session: Session) -> int:
    """The newest catalog version id (the shipped files alone are version 1)."""
    newest = session.scalar(NEWEST_VERSION)
    return int(newest or load_catalog().version)


def _override_row(row: PriceOverride) -> PriceRow:
    return PriceRow(
        provider=row.provider,
        gpu=row.gpu,
        pricing=next(k for k in PRICING_KINDS if k == row.pricing),
        usd_per_gpu_hour=row.usd_per_gpu_hour,
        as_of=row.updated_at.date(),
        source=f"{OVERRIDE_SOURCE} set by key {row.set_by_key_id}",
        origin="override",
    )


def effective_catalog(session: Session) -> Catalog:
    """The catalog with the newest import per provider and the overrides, at the newest version."""
    global _effective
    version = current_version(session)
    cached = _effective
    if cached is not None and cached[0] == version:
        return cached[1]
    base = load_catalog().with_imports(prices_service.newest_rows(session))
    rows = []
    for override in session.scalars(select(PriceOverride)):
        try:
            base.resolve_gpu_id(override.gpu)
        except UnknownGpuError:
            log.warning("price override for %s ignored: not in the GPU catalog", override.gpu)
            continue
        rows.append(_override_row(override))
    catalog = base.with_price_overrides(rows, max(version, base.version))
    with _lock:
        if _effective is None or _effective[0] <= version:
            _effective = (version, catalog)
    return catalog


def is_override(row: PriceRow) -> bool:
    """Whether a price row came from an admin override rather than the data files."""
    return row.origin == "override"


def gpu_out(catalog: Catalog) -> list[GpuOut]:
    """Every GPU of `catalog`, largest memory first."""
    specs = sorted(catalog.gpus.values(), key=lambda g: (-g.memory_gib, g.id))
    return [GpuOut(**{k: getattr(g, k) for k in GpuOut.model_fields}) for g in specs]


def aliases() -> Mapping[str, str]:
    """Short GPU names and the catalog ids they stand for."""
    return dict(GPU_ALIASES)


def price_out(
    catalog: Catalog,
    *,
    gpu: str | None,
    provider: str | None,
    pricing: str | None,
    max_age_days: int,
) -> list[PriceOut]:
    """Effective prices, filtered, cheapest first."""
    gpu_id = _gpu_id(catalog, gpu) if gpu else None
    rows = [
        r
        for r in catalog.prices
        if (gpu_id is None or r.gpu == gpu_id)
        and (provider is None or r.provider == provider)
        and (pricing is None or r.pricing == pricing)
    ]
    rows.sort(key=lambda r: (r.gpu, r.usd_per_gpu_hour, r.provider, r.pricing))
    today = utcnow().date()
    return [_price(r, today=today, max_age_days=max_age_days) for r in rows]


def _price(r: PriceRow, *, today: date, max_age_days: int) -> PriceOut:
    return PriceOut(
        provider=r.provider,
        gpu=r.gpu,
        pricing=r.pricing,
        usd_per_gpu_hour=r.usd_per_gpu_hour,
        instance=r.instance,
        gpus_per_instance=r.gpus_per_instance,
        region=r.region,
        as_of=r.as_of,
        source=r.source,
        override=is_override(r),
        origin=r.origin,
        age_days=age_days(r.as_of, today=today),
        stale=is_stale(r.as_of, today=today, max_age_days=max_age_days),
    )


def _gpu_id(catalog: Catalog, gpu: str) -> str:
    try:
        return catalog.resolve_gpu_id(gpu)
    except UnknownGpuError as exc:
        raise InvalidInput(str(exc), field="gpu", valid=exc.valid) from None


def set_price(
    session: Session,
    *,
    provider: str,
    gpu: str,
    pricing: str,
    usd_per_gpu_hour: float,
    principal: Principal,
    max_age_days: int,
) -> tuple[PriceOut, int, Any]:
    """Upsert an override and add a catalog version in the same transaction (flush only).

    Returns the effective price, the new version id and when it was set.
    """
    base = load_catalog()
    gpu_id = _gpu_id(base, gpu)
    row = session.scalar(
        select(PriceOverride)
        .where(
            PriceOverride.provider == provider,
            PriceOverride.gpu == gpu_id,
            PriceOverride.pricing == pricing,
        )
        .with_for_update()
    )
    now = utcnow()
    if row is None:
        row = PriceOverride(provider=provider, gpu=gpu_id, pricing=pricing, created_at=now)
        session.add(row)
    row.usd_per_gpu_hour = usd_per_gpu_hour
    row.set_by_key_id = principal.key_id
    row.updated_at = now
    version = CatalogVersion(
        note=f"price {provider}/{gpu_id}/{pricing} = {usd_per_gpu_hour} USD/GPU-hour "
        f"by key {principal.key_id}",
        created_at=now,
    )
    session.add(version)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("another admin changed this price at the same moment; retry") from None
    # Not cached: the version only becomes real when the request's transaction commits.
    catalog = base.with_price_overrides([_override_row(row)], version.id)
    effective = next(
        r for r in catalog.prices if (r.provider, r.gpu, r.pricing) == (provider, gpu_id, pricing)
    )
    return _price(effective, today=now.date(), max_age_days=max_age_days), version.id, now


def clear_price(
    session: Session, *, provider: str, gpu: str, pricing: str, principal: Principal
) -> int:
    """Drop an override (the listed price applies again) and add a catalog version."""
    gpu_id = _gpu_id(load_catalog(), gpu)
    row = session.scalar(
        select(PriceOverride).where(
            PriceOverride.provider == provider,
            PriceOverride.gpu == gpu_id,
            PriceOverride.pricing == pricing,
        )
    )
    if row is None:
        raise NotFound(f"no price override for {provider}/{gpu_id}/{pricing}")
    session.delete(row)
    version = CatalogVersion(
        note=f"price override {provider}/{gpu_id}/{pricing} removed by key {principal.key_id}",
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    return version.id


def _model_out(model_id: str, cfg: Mapping[str, Any]) -> ModelOut:
    text_cfg = cfg.get("text_config") or cfg
    return ModelOut(
        id=model_id,
        model_type=str(cfg.get("model_type", "")),
        architectures=list(cfg.get("architectures") or []),
        hidden_size=_first(text_cfg, "hidden_size", "n_embd", "d_model"),
        num_layers=_first(text_cfg, "num_hidden_layers", "n_layer", "num_layers"),
        num_attention_heads=_first(text_cfg, "num_attention_heads", "n_head", "num_heads"),
        num_key_value_heads=_first(text_cfg, "num_key_value_heads"),
        vocab_size=_first(text_cfg, "vocab_size"),
        max_position_embeddings=_first(text_cfg, "max_position_embeddings", "n_positions"),
    )


def model_out() -> list[ModelOut]:
    """Every catalog model's config shape (read from the cached configs; no model is built)."""
    return [_model_out(model_id, get_model_config(model_id)) for model_id in catalog_model_ids()]


def model_detail(*, model_id: str) -> ModelDetail:
    """One catalog model with exact parameter counts (built on the meta device, then cached)."""
    from app.estimator.lora import valid_target_names
    from app.estimator.lora_defaults import AUTO, resolve_lora_targets
    from app.estimator.model_notes import worker_refusal
    from app.estimator.moe import moe_quantization

    analysis, _ = resolve_model(model_id)  # 404 with close matches when unknown
    default = resolve_lora_targets(model_type=analysis.model_type, requested=AUTO)
    moe = moe_quantization(analysis)
    refusal = worker_refusal(
        model_type=analysis.model_type, is_encoder_decoder=analysis.is_encoder_decoder
    )
    notes = [n for n in (default.note(), refusal) if n] + (moe.notes if moe else [])
    return ModelDetail(
        **_model_out(model_id, analysis.config).model_dump(),
        architecture=analysis.architecture,
        total_params=analysis.total_params,
        active_params=analysis.active_params,
        params_by_kind=dict(analysis.params_by_kind),
        lora_target_names=valid_target_names(analysis),
        lora_default_targets=default.for_config(),
        lora_default_source=default.source,
        moe=moe,
        worker_can_train=refusal is None,
        notes=notes,
    )


def _first(cfg: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = cfg.get(name)
        if isinstance(value, int):
            return value
    return None
