"""Request and response bodies of the catalog routes."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.estimator.catalog_types import PriceOrigin
from app.estimator.moe import MoeQuantization
from app.estimator.spec import Pricing
from app.kit.instants import UtcInstant

# Generous ceiling for one GPU-hour: the dearest listed rate is ~$15; rejects typos like 1e9.
MAX_USD_PER_GPU_HOUR = 1000.0
PROVIDER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class ModelConfigIn(BaseModel):
    """An inline Hugging Face config.json (never run as remote code)."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any]


class ModelPathIn(BaseModel):
    """A local model folder under TUNECOST_MODEL_ROOTS holding a config.json."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=1024)


class GpuOut(BaseModel):
    """One catalog GPU."""

    id: str
    name: str
    vendor: str
    memory_gib: float
    bf16_tflops_dense: float
    fp16_tflops_dense: float
    fp32_tflops: float
    memory_bandwidth_gbps: float
    interconnect: str
    interconnect_gbps: float
    supports_bf16: bool
    tdp_watts: float
    source: str


class GpuList(BaseModel):
    """Every GPU of the catalog, and the short names accepted for some of them."""

    catalog_version: int
    gpus: list[GpuOut]
    aliases: dict[str, str]


class PriceOut(BaseModel):
    """What a provider charges per GPU-hour; `override` when an admin set it."""

    provider: str
    gpu: str
    pricing: str
    usd_per_gpu_hour: float
    instance: str
    gpus_per_instance: int
    region: str
    as_of: date = Field(description="the date the price was read from its source")
    source: str
    override: bool
    origin: PriceOrigin = Field(
        description="seed: the hand-transcribed prices.csv shipped for offline use; import: a "
        "provider price-list import (POST /v1/admin/prices/imports); override: an admin PUT"
    )
    age_days: int = Field(description="days since as_of")
    stale: bool = Field(description="older than TUNECOST_PRICE_MAX_AGE_DAYS")


class PriceList(BaseModel):
    """Effective prices at one catalog version."""

    catalog_version: int
    price_max_age_days: int = Field(description="prices older than this are marked stale")
    prices: list[PriceOut]


class PriceIn(BaseModel):
    """A negotiated rate that replaces the listed one."""

    model_config = ConfigDict(extra="forbid")

    usd_per_gpu_hour: float = Field(ge=0, le=MAX_USD_PER_GPU_HOUR)
    pricing: Pricing = "on_demand"


class PriceSet(BaseModel):
    """The stored override and the catalog version it created."""

    catalog_version: int
    price: PriceOut
    set_at: UtcInstant


class PriceCleared(BaseModel):
    """The catalog version created by removing an override."""

    catalog_version: int


class ModelOut(BaseModel):
    """One catalog model: its hub id and the shape numbers of its config."""

    id: str
    model_type: str
    architectures: list[str]
    hidden_size: int | None
    num_layers: int | None
    num_attention_heads: int | None
    num_key_value_heads: int | None
    vocab_size: int | None
    max_position_embeddings: int | None


class ModelDetail(ModelOut):
    """One catalog model with its exact parameter counts."""

    architecture: str
    total_params: int
    active_params: int = Field(description="parameters a token passes through (MoE: routed)")
    params_by_kind: dict[str, int]
    lora_target_names: list[str] = Field(description="linear layer names LoRA may target")
    lora_default_targets: list[str] | str = Field(
        description="what lora.target_modules 'auto' (the default) adapts on this model"
    )
    lora_default_source: str = Field(
        description="peft_default: peft's mapping for the model type; fallback: all-linear, "
        "because peft has none"
    )
    moe: MoeQuantization | None = Field(
        None, description="MoE only: what QLoRA quantizes, what stays 16-bit, expert adapters"
    )
    worker_can_train: bool = Field(description="whether tunecost's worker can run jobs on it")
    notes: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    """Every model of the catalog."""

    models: list[ModelOut]
