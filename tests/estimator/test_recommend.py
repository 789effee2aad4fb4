"""The recommendation rules: full fine-tuning only with a justification and the means to pay."""

from __future__ import annotations

import re

from app.catalog import load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator.model_analysis import analyze_model
from app.estimator.pricing import variant_storage
from app.estimator.recommend import recommend
from app.estimator.results import (
    MemoryBreakdownOut,
    MemoryOut,
    MethodResult,
    Plan,
    TimeOut,
)
from app.estimator.spec import Method

GB = 10**9
GIB = 2**30
LLAMA7 = analyze_model(get_model_config("meta-llama/Llama-2-7b-hf"))
FULL_BYTES = LLAMA7.total_params * 2
ADAPTER_BYTES = 4_194_304 * 2 + 8_000


def result(
    method: Method,
    *,
    cost: float,
    hours: float,
    gb: float,
    gpu: str = "A100-80GB",
    n: int = 1,
    fits: bool = True,
) -> MethodResult:
    memory = MemoryOut(
        per_gpu_bytes=int(gb * GB),
        low_bytes=int(gb * GB * 0.9),
        high_bytes=int(gb * GB * 1.1),
        breakdown=MemoryBreakdownOut(weights=int(gb * GB)),
    )
    zero = dict.fromkeys(
        ("compute_s", "weight_stream_s", "dequant_s", "optimizer_s", "comm_s", "overhead_s"), 0.0
    )
    return MethodResult(
        method=method,
        trainable_params=LLAMA7.total_params if method is Method.FULL else 4_194_304,
        memory=memory,
        gpu=gpu,
        num_gpus=n,
        nodes=1,
        strategy="fsdp_zero3" if n > 1 else "single",
        fits=fits,
        flops=1e18,
        flops_detail={"per_token": {"total": 1e11}, "total": 1e18},
        hours=hours,
        time=TimeOut(**zero, total_s=hours * 3600),
        steps=1000,
        billed_gpus=n,
        gpu_hours=hours * n,
        provider="aws",
        pricing="on_demand",
        price_per_gpu_hour=cost / (hours * n),
        cost_usd=cost,
        mfu=0.3,
        basis="prior",
        calibration_jobs=0,
        artifact_bytes=FULL_BYTES if method is Method.FULL else ADAPTER_BYTES,
        storage_cost_usd=0.0,
        notes=[],
    )


def three(*, full_fits: bool = True, lora_fits: bool = True) -> dict[Method, MethodResult]:
    return {
        Method.FULL: result(Method.FULL, cost=41.2, hours=2.6, gb=61.2, n=2, fits=full_fits),
        Method.LORA: result(Method.LORA, cost=10.05, hours=2.5, gb=21.3, fits=lora_fits),
        Method.QLORA: result(Method.QLORA, cost=13.9, hours=3.4, gb=9.9),
    }


def test_lora_is_recommended_without_a_reason_for_full() -> None:
    verdict = recommend(results=three(), plans={}, domain_shift="low")
    assert verdict.method is Method.LORA
    text = " ".join(verdict.reasons)
    assert "Hu et al. 2021" in text and "Dettmers et al. 2023" in text
    # the cost comparison, with the numbers: 41.2 / 10.05 = 4.1x
    assert "costs $41.20" in text and "4.1x LoRA's $10.05" in text
    assert "2x A100-80GB" in text


def test_full_finetuning_needs_a_justification() -> None:
    for shift in (None, "low", "medium"):
        assert recommend(results=three(), plans={}, domain_shift=shift).method is Method.LORA
    high = recommend(results=three(), plans={}, domain_shift="high")
    assert high.method is Method.FULL
    assert "Biderman et al. 2024" in high.reasons[0]
    tried = recommend(results=three(), plans={}, lora_tried_and_insufficient=True)
    assert tried.method is Method.FULL
    assert "already tried" in tried.reasons[0]


def test_justified_full_finetuning_still_needs_budget_and_hardware() -> None:
    over = recommend(results=three(), plans={}, domain_shift="high", budget_usd=20.0)
    assert over.method is Method.LORA
    assert any("over the $20.00 budget" in r and "justified" in r for r in over.reasons)

    nofit_plans = {Method.FULL: [_plan(fits=False)]}
    no_room = recommend(results=three(full_fits=False), plans=nofit_plans, domain_shift="high")
    assert no_room.method is Method.LORA
    need = f"{61.2 * GB / GIB:.1f} GiB per GPU"
    assert any("does not fit" in r and need in r for r in no_room.reasons)


def test_qlora_when_memory_is_the_constraint() -> None:
    verdict = recommend(results=three(lora_fits=False), plans={}, domain_shift="low")
    assert verdict.method is Method.QLORA
    text = " ".join(verdict.reasons)
    assert "QLoRA is what the memory allows" in text and f"{9.9 * GB / GIB:.1f} GiB per GPU" in text
    assert "LoRA does not fit" in text


def test_qlora_when_it_is_much_cheaper() -> None:
    results = three()
    results[Method.QLORA] = result(Method.QLORA, cost=4.0, hours=6.0, gb=9.9, gpu="L4")
    verdict = recommend(results=results, plans={})
    assert verdict.method is Method.QLORA
    assert "cheaper GPU" in verdict.reasons[0]


def test_nothing_feasible_gives_no_method_and_says_why() -> None:
    results = {m: r.model_copy(update={"fits": False}) for m, r in three().items()}
    verdict = recommend(results=results, plans={})
    assert verdict.method is None
    assert sum("does not fit" in r for r in verdict.reasons) == 3


def test_twelve_variants_storage_sentence() -> None:
    storage = variant_storage(
        full_artifact_bytes=FULL_BYTES,
        adapter_artifact_bytes=ADAPTER_BYTES,
        variants=12,
        months=12,
        price=load_catalog().storage_price("aws"),
    )
    verdict = recommend(results=three(), plans={}, storage=storage, base_bytes=FULL_BYTES)
    sentence = next(r for r in verdict.reasons if r.startswith("12 task variants"))
    full = re.search(r"12 full checkpoints = ([\d.,]+) GiB", sentence)
    adapters = re.search(r"12 adapters = ([\d.,]+) MiB", sentence)
    assert full is not None and adapters is not None, sentence
    full_gib, adapters_mib = float(full[1].replace(",", "")), float(adapters[1])
    assert full_gib == round(12 * FULL_BYTES / GIB, 1)
    assert adapters_mib == round(12 * ADAPTER_BYTES / 2**20, 1)
    assert "$" in sentence and "12 months" in sentence
    assert f"{FULL_BYTES / GIB:.1f} GiB, kept whichever method" in sentence
    single = recommend(
        results=three(),
        plans={},
        storage=storage.__class__(**{**storage.__dict__, "variants": 1}),
        base_bytes=FULL_BYTES,
    )
    assert not any("task variants" in r for r in single.reasons)


def _plan(*, fits: bool) -> Plan:
    return Plan(
        gpu="H100-80GB-SXM", num_gpus=2, nodes=1, provider="lambda", pricing="on_demand",
        fits=fits, reason=None if fits else "needs more", per_gpu_bytes=61 * GB,
        gpu_memory_bytes=80 * GB, strategy="fsdp_zero3", hours=1.0, billed_gpus=2,
        gpu_hours=2.0, price_per_gpu_hour=2.99, cost_usd=5.98, mfu=0.35, basis="prior",
    )  # fmt: skip
