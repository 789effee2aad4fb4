"""Money: GPU-hours times price, the size of what a run leaves behind, and storing K variants.

A full fine-tune leaves a whole checkpoint per task; LoRA and QLoRA leave a small adapter file
that needs the (shared) base model beside it. With many task variants that difference, not the
training bill, can dominate (the storage argument for adapters).

Storage cost is defined once, here: what the fine-tune adds to storage, i.e. its artifact
(the checkpoint or the adapter file) once per task variant, kept for `months`, at one storage
price per estimate (the asked provider's, else the cheapest listed). The base model is not
counted: every method starts from it and serving an adapter keeps it anyway. So a smaller
artifact never costs more to store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from app.estimator.catalog_types import PriceRow, StoragePrice
from app.estimator.conventions import DTYPE_BYTES, adapter_dtype, saved_module_dtype
from app.estimator.lora import lora_targets
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import LoraSpec, Method, TrainingSpec

GIB = 1024**3  # cloud storage bills per GB-month where 1 GB = 2^30 bytes (AWS S3 pricing FAQ)
BASE_CHECKPOINT_BYTES_PER_PARAM = 2  # published base checkpoints are bf16/fp16 safetensors
SAFETENSORS_LENGTH_PREFIX = 8  # u64 header length at the start of every .safetensors file
SAFETENSORS_ALIGN = 8  # the JSON header is space-padded to a multiple of 8 bytes
PEFT_PREFIX = "base_model.model."  # peft's key prefix in adapter_model.safetensors


@dataclass(frozen=True)
class ArtifactSize:
    """What one finished run writes: a full checkpoint or an adapter file, in bytes."""

    kind: str  # "checkpoint" or "adapter"
    bytes: int
    dtype_bytes: int
    header_bytes: int


@dataclass(frozen=True)
class RunCost:
    """What the GPUs of one run cost."""

    provider: str
    pricing: str
    price_per_gpu_hour: float
    billed_gpus: int  # whole instances: a 1-GPU run on an 8-GPU-only offer pays for 8
    gpu_hours: float
    cost_usd: float
    instance: str = ""
    gpus_per_instance: int = 1
    region: str = ""
    price_as_of: date | None = None
    price_source: str = ""


@dataclass(frozen=True)
class VariantStorage:
    """Bytes and dollars to keep K task variants for some months, by approach."""

    variants: int
    months: float
    provider: str
    usd_per_gb_month: float
    full_bytes: int  # K full checkpoints
    adapter_bytes: int  # K adapters (served on one shared base, not counted)
    full_usd: float
    adapter_usd: float


def saved_dtype_bytes(precision: str) -> int:
    """Bytes per element of what `save_pretrained` writes: the dtype the weights train in."""
    return 2 if precision == "bf16_true" else 4


def _header_bytes(tensors: list[tuple[str, list[int]]], dtype: str, width: int) -> int:
    """Length of a safetensors header for `tensors`, written as the library writes it."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in sorted(tensors):
        size = width
        for dim in shape:
            size *= dim
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(entries, separators=(",", ":"))
    padded = -(-len(text) // SAFETENSORS_ALIGN) * SAFETENSORS_ALIGN
    return SAFETENSORS_LENGTH_PREFIX + padded


def artifact_size(
    *,
    analysis: ModelAnalysis,
    method: Method | str,
    training: TrainingSpec,
    lora: LoraSpec,
    lora_trainable: int,
) -> ArtifactSize:
    """Bytes of the checkpoint (full) or adapter_model.safetensors (LoRA/QLoRA) a run saves.

    peft saves the adapter in the dtype it trained in: A and B in `conventions.adapter_dtype`
    (fp32, or bf16 with `training.adapter_dtype`), modules_to_save copies in
    `conventions.saved_module_dtype`.
    """
    width = saved_dtype_bytes(training.precision)
    if Method(method) is Method.FULL:
        return ArtifactSize(
            kind="checkpoint",
            bytes=analysis.total_params * width,
            dtype_bytes=width,
            header_bytes=0,  # a few KB over many GB: below any price resolution
        )
    tensors: list[tuple[str, list[int]]] = []
    counted = 0
    for name, fan_in, fan_out in lora_targets(analysis, lora):
        tensors.append((f"{PEFT_PREFIX}{name}.lora_A.weight", [lora.r, fan_in]))
        tensors.append((f"{PEFT_PREFIX}{name}.lora_B.weight", [fan_out, lora.r]))
        counted += lora.r * (fan_in + fan_out)
    # modules_to_save (and anything the layer list cannot name) are saved as whole tensors
    extra = max(0, lora_trainable - counted)
    if extra:
        tensors.append((PEFT_PREFIX + "modules_to_save.weight", [extra]))
    adapter = DTYPE_BYTES[
        adapter_dtype(precision=training.precision, adapters_fp32=training.adapters_fp32)
    ]
    saved = DTYPE_BYTES[saved_module_dtype(precision=training.precision)]
    header = _header_bytes(tensors, "BF16" if adapter == 2 else "F32", adapter)
    return ArtifactSize(
        kind="adapter",
        bytes=counted * adapter + extra * saved + header,
        dtype_bytes=adapter,
        header_bytes=header,
    )


def run_cost(*, hours: float, num_gpus: int, price: PriceRow) -> RunCost:
    """GPU-hours (whole instances billed) times the price of `price`'s offer."""
    billed = price.billed_gpus(num_gpus)
    gpu_hours = hours * billed
    return RunCost(
        provider=price.provider,
        pricing=price.pricing,
        price_per_gpu_hour=price.usd_per_gpu_hour,
        billed_gpus=billed,
        gpu_hours=gpu_hours,
        cost_usd=gpu_hours * price.usd_per_gpu_hour,
        instance=price.instance,
        gpus_per_instance=price.gpus_per_instance,
        region=price.region,
        price_as_of=price.as_of,
        price_source=price.source,
    )


def storage_usd(*, stored_bytes: float, months: float, price: StoragePrice) -> float:
    """Dollars to keep `stored_bytes` for `months` at `price`."""
    return stored_bytes / GIB * price.usd_per_gb_month * months


def stored_bytes(*, artifact_bytes: int, variants: int) -> int:
    """Bytes a fine-tune adds to storage for `variants` tasks: one artifact per variant."""
    return variants * artifact_bytes


def base_model_bytes(analysis: ModelAnalysis) -> int:
    """The published base checkpoint adapters are served on (16-bit safetensors)."""
    return analysis.total_params * BASE_CHECKPOINT_BYTES_PER_PARAM


def variant_storage(
    *,
    full_artifact_bytes: int,
    adapter_artifact_bytes: int,
    variants: int,
    months: float,
    price: StoragePrice,
) -> VariantStorage:
    """K full checkpoints versus K adapters, in bytes and dollars (storage cost as defined
    above: the shared base model is not counted)."""
    full = stored_bytes(artifact_bytes=full_artifact_bytes, variants=variants)
    adapters = stored_bytes(artifact_bytes=adapter_artifact_bytes, variants=variants)
    return VariantStorage(
        variants=variants,
        months=months,
        provider=price.provider,
        usd_per_gb_month=price.usd_per_gb_month,
        full_bytes=full,
        adapter_bytes=adapters,
        full_usd=storage_usd(stored_bytes=full, months=months, price=price),
        adapter_usd=storage_usd(stored_bytes=adapters, months=months, price=price),
    )
