"""Print how long a full estimate of a 70B catalog model takes: first, and cached (target < 5 ms).

"first" starts from a cold process for this model: meta-device analysis, peft's LoRA count, the
memory model and the planner over every GPU, count and price. "engine only" is the same estimate
with analysis and LoRA counts warm (what a new request for a known model pays). "cached" asks
the same question again. Run: `python bench/estimator_speed.py [catalog-model-id]`.
"""

from __future__ import annotations

import statistics
import sys
import time

from app.catalog import load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator import engine
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    QLoraSpec,
    TrainingSpec,
)

MODEL = sys.argv[1] if len(sys.argv) > 1 else "meta-llama/Llama-3.1-70B"
REPEATS = 200


def main() -> None:
    """Time the first, warm-engine and cached estimates and print them."""
    catalog = load_catalog()
    config = get_model_config(MODEL)
    kwargs = dict(
        dataset=DatasetShape(num_examples=50_000, avg_tokens=350, max_tokens=2048),
        methods=["full", "lora", "qlora"],
        training=TrainingSpec(seq_len=2048, gradient_checkpointing=True),
        lora=LoraSpec(r=16, target_modules="all-linear"),
        qlora=QLoraSpec(),
        hardware=HardwareSpec(),
        catalog=catalog,
        variants=12,
    )

    start = time.perf_counter()
    analysis = analyze_model(config)
    result = engine.estimate(analysis=analysis, **kwargs)  # type: ignore[arg-type]
    first = time.perf_counter() - start

    engine.clear_cache()
    start = time.perf_counter()
    engine.estimate(analysis=analyze_model(config), **kwargs)  # type: ignore[arg-type]
    warm = time.perf_counter() - start

    cached = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        engine.estimate(analysis=analyze_model(config), **kwargs)  # type: ignore[arg-type]
        cached.append(time.perf_counter() - start)

    print(f"model: {MODEL} ({result.model.total_params:,} parameters)")
    print(f"first estimate (cold analysis + peft + engine): {first * 1000:9.1f} ms")
    print(f"engine only (analysis warm, estimate not cached): {warm * 1000:7.1f} ms")
    print(
        f"cached estimate, median of {REPEATS}: {statistics.median(cached) * 1000:8.3f} ms "
        f"(p99 {sorted(cached)[int(REPEATS * 0.99) - 1] * 1000:.3f} ms; target < 5 ms)"
    )
    for method, res in result.results.items():
        cost = f"${res.cost_usd:,.2f}" if res.cost_usd is not None else "unpriced"
        print(
            f"  {method.value:6s} {res.num_gpus}x {res.gpu:14s} {res.provider or '-':7s} "
            f"{res.hours:8.1f} h  {cost:>12s}  fits={res.fits}"
        )
    print(f"  recommended: {result.recommendation.method}")


if __name__ == "__main__":
    main()
