"""Artifact sizes against the files peft and transformers really write; cost and storage."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pytest
import torch

from app.catalog import PriceRow, load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator.engine import estimate
from app.estimator.lora import lora_trainable_params
from app.estimator.model_analysis import analyze_model
from app.estimator.pricing import (
    GIB,
    artifact_size,
    run_cost,
    storage_usd,
    variant_storage,
)
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
)
from tests.estimator.realmodel import TINY, build_real, with_lora, worker_adapters_fp32

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("family", "targets", "precision"),
    [
        ("llama", ["q_proj", "v_proj"], "bf16_true"),
        ("llama", "all-linear", "bf16_mixed"),
        ("qwen2", ["q_proj", "k_proj", "v_proj", "o_proj"], "bf16_true"),
        ("gpt2", ["c_attn"], "fp32"),
    ],
)
def test_adapter_bytes_match_the_file_peft_writes(
    tmp_path: Path, family: str, targets: list[str] | str, precision: str
) -> None:
    config = TINY[family]
    lora = LoraSpec(r=8, target_modules=targets)
    base = build_real(config)
    if precision == "bf16_true":
        base = base.to(torch.bfloat16)  # the worker loads the base in bf16, adapters go fp32
    model = with_lora(base, lora, fp32_adapters=worker_adapters_fp32(precision))
    model.save_pretrained(str(tmp_path))
    written = (tmp_path / "adapter_model.safetensors").stat().st_size

    analysis = analyze_model(config)
    size = artifact_size(
        analysis=analysis,
        method=Method.LORA,
        training=TrainingSpec(precision=precision),
        lora=lora,
        lora_trainable=lora_trainable_params(analysis, lora),
    )
    assert size.kind == "adapter"
    assert size.bytes == pytest.approx(written, rel=0.01)
    assert size.header_bytes < size.bytes


@pytest.mark.parametrize(("family", "precision"), [("llama", "bf16_true"), ("qwen2", "fp32")])
def test_full_checkpoint_bytes_match_save_pretrained(
    tmp_path: Path, family: str, precision: str
) -> None:
    config = TINY[family]  # qwen2's tiny config ties the embeddings: saved once
    model = build_real(config)
    if precision == "bf16_true":
        model = model.to(torch.bfloat16)
    model.save_pretrained(tmp_path)  # type: ignore[operator]  # a transformers model behind nn.Module, which does not declare it
    written = sum(f.stat().st_size for f in tmp_path.glob("*.safetensors"))
    size = artifact_size(
        analysis=analyze_model(config),
        method=Method.FULL,
        training=TrainingSpec(precision=precision),
        lora=LoraSpec(),
        lora_trainable=0,
    )
    assert size.kind == "checkpoint"
    assert size.bytes == pytest.approx(written, rel=0.05)  # the header is the difference


def test_seven_b_adapter_is_an_eight_hundredth_of_the_checkpoint() -> None:
    analysis = analyze_model(get_model_config("meta-llama/Llama-2-7b-hf"))
    lora = LoraSpec(r=8, target_modules=["q_proj", "v_proj"])
    trainable = lora_trainable_params(analysis, lora)
    assert trainable == 4_194_304  # published count for this config
    training = TrainingSpec(precision="bf16_true")
    adapter = artifact_size(
        analysis=analysis,
        method="lora",
        training=training,
        lora=lora,
        lora_trainable=trainable,
    )
    full = artifact_size(
        analysis=analysis, method="full", training=training, lora=lora, lora_trainable=0
    )
    assert adapter.bytes == trainable * 4 + adapter.header_bytes  # fp32 adapters
    assert full.bytes == analysis.total_params * 2
    assert 500 < full.bytes / adapter.bytes < 1_000


def test_a_one_gpu_run_on_an_eight_gpu_offer_pays_for_the_whole_instance() -> None:
    p4d = next(r for r in CATALOG.prices_for("A100-40GB", provider="aws", pricing="on_demand"))
    assert p4d.gpus_per_instance == 8
    one = run_cost(hours=2.0, num_gpus=1, price=p4d)
    eight = run_cost(hours=2.0 / 8, num_gpus=8, price=p4d)
    assert one.billed_gpus == 8
    assert one.cost_usd == pytest.approx(16 * p4d.usd_per_gpu_hour)
    assert eight.cost_usd == pytest.approx(one.cost_usd / 8)  # same instance, 8x sooner
    single = PriceRow(
        provider="x", gpu="A100-40GB", pricing="on_demand", usd_per_gpu_hour=1.5,
        as_of=date(2025, 1, 1), source="test",
    )  # fmt: skip
    assert run_cost(hours=2.0, num_gpus=3, price=single).cost_usd == pytest.approx(9.0)


def test_twelve_variants_store_twelve_artifacts() -> None:
    analysis = analyze_model(get_model_config("meta-llama/Llama-2-7b-hf"))
    price = CATALOG.storage_price("aws")
    full_bytes, adapter_bytes = analysis.total_params * 2, 8_400_000
    stored = variant_storage(
        full_artifact_bytes=full_bytes,
        adapter_artifact_bytes=adapter_bytes,
        variants=12,
        months=12,
        price=price,
    )
    # what the fine-tunes add: one artifact per variant; the base model is not counted
    assert stored.full_bytes == 12 * full_bytes
    assert stored.adapter_bytes == 12 * adapter_bytes
    assert stored.full_usd == pytest.approx(12 * full_bytes / GIB * price.usd_per_gb_month * 12)
    assert stored.full_usd / stored.adapter_usd == pytest.approx(full_bytes / adapter_bytes)
    assert storage_usd(stored_bytes=GIB, months=1, price=price) == price.usd_per_gb_month


def test_a_smaller_artifact_never_costs_more_to_store() -> None:
    # every method of one estimate, on GPUs from every provider: the storage price is one per
    # estimate, so storage cost follows artifact size
    llama70 = analyze_model(get_model_config("meta-llama/Llama-3.1-70B"))
    for hardware in (
        HardwareSpec(),
        HardwareSpec(gpu="H100-80GB-SXM"),
        HardwareSpec(gpu="H100-80GB-SXM", num_gpus=1),
        HardwareSpec(provider="lambda"),
    ):
        result = estimate(
            analysis=llama70,
            dataset=DatasetShape(num_examples=50_000, avg_tokens=300, max_tokens=2048),
            methods=["full", "lora", "qlora"],
            training=TrainingSpec(),
            lora=LoraSpec(),
            qlora=QLoraSpec(),
            hardware=hardware,
            catalog=CATALOG,
            variants=3,
        )
        ranked = sorted(result.results.values(), key=lambda r: r.artifact_bytes)
        for smaller, larger in itertools.pairwise(ranked):
            assert smaller.storage_cost_usd <= larger.storage_cost_usd, hardware
        per_byte = {r.storage_cost_usd / r.artifact_bytes for r in ranked}
        assert max(per_byte) == pytest.approx(min(per_byte))  # one price, K=3 copies
        price = CATALOG.storage_price(hardware.provider)
        for r in ranked:
            assert r.storage_cost_usd == pytest.approx(
                3 * r.artifact_bytes / GIB * price.usd_per_gb_month * 12
            )


def test_unknown_provider_storage_falls_back_to_the_cheapest() -> None:
    cheapest = min(CATALOG.storage_prices.values(), key=lambda s: s.usd_per_gb_month)
    assert CATALOG.storage_price("nowhere") == cheapest
    assert CATALOG.storage_price(None) == cheapest
