"""The planner: cheapest fitting option first, every cheaper option rejected with its reason."""

from __future__ import annotations

import math
from datetime import date

import pytest

from app.catalog import Catalog, PriceRow, load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator.lora import lora_trainable_params
from app.estimator.memory import MemoryEstimate, estimate_memory
from app.estimator.model_analysis import ModelAnalysis, analyze_model
from app.estimator.planner import PlanContext, evaluate, plan_method
from app.estimator.results import Plan
from app.estimator.spec import DatasetShape, LoraSpec, Method, QLoraSpec, TrainingSpec
from app.estimator.workload import build_workload

LLAMA13 = analyze_model(get_model_config("meta-llama/Llama-2-13b-hf"))
LLAMA7 = analyze_model(get_model_config("meta-llama/Llama-2-7b-hf"))
LLAMA70 = analyze_model(get_model_config("meta-llama/Llama-2-70b-hf"))
LORA = LoraSpec(r=8, target_modules=["q_proj", "v_proj"])
DATA = DatasetShape(num_examples=20_000, avg_tokens=300, max_tokens=1024)


def context(
    method: Method, analysis: ModelAnalysis = LLAMA13, training: TrainingSpec | None = None
) -> PlanContext:
    training = training or TrainingSpec(seq_len=1024)
    qlora = QLoraSpec()

    def memory(spec: TrainingSpec, num_gpus: int, gpu_memory_bytes: int | None) -> MemoryEstimate:
        return estimate_memory(
            analysis=analysis,
            method=method,
            training=spec,
            lora=LORA,
            qlora=qlora,
            seq_len=1024,
            num_gpus=num_gpus,
            sharding=training.sharding,
            gpu_memory_bytes=gpu_memory_bytes,
        )

    return PlanContext(
        analysis=analysis,
        method=method,
        training=training,
        qlora=qlora,
        workload=build_workload(dataset=DATA, training=training, max_position_embeddings=4096),
        lora_trainable=0 if method is Method.FULL else lora_trainable_params(analysis, LORA),
        artifact_bytes=0,
        memory=memory,
        lora=None if method is Method.FULL else LORA,
    )


def bargain(catalog: Catalog, gpu: str, usd: float = 0.01) -> Catalog:
    """The catalog with `gpu` offered absurdly cheap at a made-up provider."""
    row = PriceRow(
        provider="bargain", gpu=gpu, pricing="on_demand", usd_per_gpu_hour=usd,
        as_of=date(2025, 1, 1), source="test",
    )  # fmt: skip
    return catalog.with_price_overrides([row], version=catalog.version + 1)


def split(plans: list[Plan]) -> tuple[list[Plan], list[Plan]]:
    fitting = [p for p in plans if p.fits]
    assert plans[: len(fitting)] == fitting  # fitting options come first
    return fitting, plans[len(fitting) :]


def test_cheapest_fitting_plan_first_and_cheaper_ones_explained() -> None:
    # One 24 GB card at a give-away price cannot hold 13B LoRA (26 GB of bf16 weights alone):
    # on single GPUs the planner must not pick it, and must say why it did not. (Several of
    # them can: ZeRO-3 shards the frozen base, see the auto-sharding test below.)
    catalog = bargain(load_catalog(), "RTX-3090")
    ctx = context(Method.LORA)
    plans = plan_method(
        ctx, catalog, gpus=catalog.gpus.values(), provider=None, pricing="on_demand", counts=(1,)
    )
    fitting, rejected = split(plans)
    assert fitting, "13B LoRA fits somewhere in the catalog"
    costs = [p.cost_usd for p in fitting if p.cost_usd is not None]
    assert len(costs) == len(fitting) and costs == sorted(costs)
    for p in fitting:
        assert p.per_gpu_bytes <= p.gpu_memory_bytes
        assert p.price_per_gpu_hour is not None
        assert p.cost_usd == pytest.approx(p.gpu_hours * p.price_per_gpu_hour)
    best = fitting[0]
    assert best.cost_usd is not None
    assert best.gpu != "RTX-3090"
    cheap = next(p for p in rejected if p.gpu == "RTX-3090")
    # what does not fit cannot run as estimated: it is listed with its reason and no price
    assert cheap.cost_usd is None and cheap.price_per_gpu_hour is None
    assert cheap.reason is not None and "GiB per GPU" in cheap.reason and "RTX-3090" in cheap.reason
    assert "even with" in cheap.reason  # every lever was tried
    assert cheap.per_gpu_bytes > cheap.gpu_memory_bytes
    for p in rejected:  # each option that is not usable says why, and has no cost
        assert p.reason and p.cost_usd is None


def test_a_gpu_without_bf16_is_rejected_for_bf16_training() -> None:
    catalog = bargain(load_catalog(), "T4")
    ctx = context(Method.QLORA, analysis=LLAMA7)
    plans = plan_method(ctx, catalog, gpus=[catalog.gpu("T4")], provider=None, pricing=None)
    assert plans and not any(p.fits for p in plans)
    assert "no bf16 support" in (plans[0].reason or "")
    fp16 = context(Method.QLORA, analysis=LLAMA7, training=TrainingSpec(precision="fp16_mixed"))
    assert evaluate(fp16, catalog.gpu("T4"), 1).time is not None  # fp16 runs on a T4


def test_full_finetuning_shards_over_several_gpus_when_one_is_too_small() -> None:
    catalog = load_catalog()
    # torch AdamW, no checkpointing: the levers that would make one 40 GB GPU do are pinned off
    plain = TrainingSpec(seq_len=1024, optimizer="adamw", gradient_checkpointing=False)
    ctx = context(Method.FULL, analysis=LLAMA7, training=plain)
    a100 = catalog.gpu("A100-40GB")
    one = evaluate(ctx, a100, 1)
    assert not one.fits and one.reason and "A100-40GB" in one.reason
    fits = [n for n in (2, 4, 8, 16) if evaluate(ctx, a100, n).fits]
    assert fits, "7B full fine-tuning fits a few sharded 40 GB GPUs"
    assert evaluate(ctx, a100, fits[0]).per_gpu_bytes < one.per_gpu_bytes


def test_provider_pricing_and_availability_filters() -> None:
    catalog = load_catalog()
    ctx = context(Method.LORA, analysis=LLAMA7)
    aws = plan_method(ctx, catalog, gpus=catalog.gpus.values(), provider="aws", pricing="spot")
    assert aws and all(p.provider in ("aws", None) and p.pricing == "spot" for p in aws)
    limited = plan_method(
        ctx,
        catalog,
        gpus=[catalog.gpu("L40S"), catalog.gpu("A100-80GB")],
        provider=None,
        pricing="on_demand",
        available={"L40S": 2, "A100-80GB": 1},
    )
    assert {p.gpu for p in limited} <= {"L40S", "A100-80GB"}
    assert all(p.num_gpus <= (2 if p.gpu == "L40S" else 1) for p in limited)


def test_no_price_is_a_reason_not_a_crash() -> None:
    catalog = load_catalog()
    ctx = context(Method.LORA, analysis=LLAMA7)
    plans = plan_method(
        ctx, catalog, gpus=[catalog.gpu("RTX-4090")], provider="aws", pricing="on_demand"
    )
    assert plans and not plans[0].fits and plans[0].cost_usd is None
    assert "no on_demand price for RTX-4090 at aws" in (plans[0].reason or "")
    assert math.isfinite(plans[0].hours)


def test_auto_sharding_picks_the_least_sharded_strategy_that_fits_the_gpu() -> None:
    # Llama-2-70B LoRA in bf16 (138 GB of frozen base) on 80 GB GPUs: replicated (DDP) it fits
    # no count of them, so the planner must shard the frozen base (FSDP/ZeRO-3) to fit.
    catalog = load_catalog()
    h100 = catalog.gpu("H100-80GB-SXM")
    lora = context(Method.LORA, analysis=LLAMA70)
    assert not evaluate(lora, h100, 1).fits
    replicated = lora.memory_for(lora.training, 8)  # no GPU size given: DDP, as before
    assert replicated.strategy == "ddp" and replicated.per_gpu_bytes > h100.memory_bytes
    fitting = [n for n in (2, 4, 8) if evaluate(lora, h100, n).fits]
    assert fitting, "70B LoRA fits a few 80 GB GPUs once the frozen base is sharded"
    best = evaluate(lora, h100, fitting[0])
    assert best.memory.strategy == "fsdp_zero3"
    assert best.per_gpu_bytes <= h100.memory_bytes < replicated.per_gpu_bytes
    # QLoRA's 4-bit base fits one GPU: no sharding at all
    qlora = evaluate(context(Method.QLORA, analysis=LLAMA70), h100, 1)
    assert qlora.fits and qlora.memory.strategy == "single"
    # where replication fits, it is kept (no sharding traffic): 7B LoRA on 2 x H100
    assert evaluate(context(Method.LORA, analysis=LLAMA7), h100, 2).memory.strategy == "ddp"
    # full fine-tuning tries DDP, then ZeRO-2, then ZeRO-3 and keeps the first that fits
    full = context(Method.FULL, analysis=LLAMA7)
    order = ["ddp", "fsdp_zero2", "fsdp_zero3"]
    chosen = {}
    for gpu, n in ((h100, 2), (catalog.gpu("A100-40GB"), 2)):
        candidate = evaluate(full, gpu, n)
        assert candidate.fits
        chosen[gpu.id] = candidate.memory.strategy
        for less_sharded in order[: order.index(candidate.memory.strategy)]:
            tried = estimate_memory(
                analysis=LLAMA7,
                method=Method.FULL,
                training=full.training,
                lora=LORA,
                qlora=QLoraSpec(),
                seq_len=1024,
                num_gpus=n,
                sharding=less_sharded,
            )
            assert tried.per_gpu_bytes > gpu.memory_bytes
    # 2 x 80 GB hold 7B with replicated weights (ZeRO-2); 2 x 40 GB need them sharded too
    assert chosen == {"H100-80GB-SXM": "fsdp_zero2", "A100-40GB": "fsdp_zero3"}
