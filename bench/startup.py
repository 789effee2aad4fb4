"""Start-up of a CPU job: the seconds a run spends outside its training loop, measured.

    PYTHONPATH=. python bench/startup.py [--runs 3] [--steps 40]

Runs `make demo`'s jobs (the tiny Llama-style model, 400 Alpaca-style records, LoRA and QLoRA,
seq_len 64, micro-batch 4, fp32, the demo's 40 steps) for real in the worker's training child
(`worker.training.runner.run_in_child`: a spawned process that imports torch, transformers and
peft, loads the model, tokenizes, trains, evaluates and saves), and prints, per method and
over all runs, what the estimator's start-up term stands for: wall - training loop + the first
step's one-time set-up (`warmup_s`), the quantity calibration fits as a run's overhead. The
median over every run is the source of `efficiency.CPU_STARTUP_SECONDS`. Exits non-zero when no
run finished.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.tinymodel import make_tiny_dataset, make_tiny_model  # noqa: E402
from worker.training.runner import run_in_child  # noqa: E402
from worker.training.spec import parse_launch  # noqa: E402

TRAINING = {"seq_len": 64, "micro_batch_size": 4, "precision": "fp32", "attention": "sdpa"}
QLORA_LORA = {"r": 8, "alpha": 16, "target_modules": "auto"}


def one_run(method: str, model: Path, data: Path, out: Path, steps: int) -> float | None:
    """Seconds outside the training loop of one real job, or None if it did not succeed."""
    spec = {
        "method": method,
        "model": {"path": str(model)},
        "training": TRAINING,
        "lora": QLORA_LORA,
        "max_steps": steps,
        "price_per_gpu_hour": 0.0,
    }
    launch = parse_launch(
        {"spec": spec, "run": {"job_id": "bench", "dataset_path": str(data), "device": "cpu"}}
    )
    outcome = run_in_child(launch, out_dir=out)
    actuals = outcome.actuals
    if outcome.status != "succeeded" or actuals is None or actuals.train_s is None:
        print(f"{method}: {outcome.status} {outcome.error or ''}")
        return None
    return actuals.wall_s - actuals.train_s + (actuals.warmup_s or 0.0)


def main() -> int:
    """Measure and print; non-zero exit on no successful run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="jobs per method")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    seen: dict[str, list[float]] = {"lora": [], "qlora": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "tiny-llama")
        data = make_tiny_dataset(root / "alpaca.jsonl", n=400, fmt="alpaca")
        for i in range(args.runs):
            for method in seen:
                began = time.perf_counter()
                overhead = one_run(method, model, data, root / f"out-{method}-{i}", args.steps)
                took = time.perf_counter() - began
                if overhead is not None:
                    seen[method].append(overhead)
                    print(f"{method} run {i + 1}: {overhead:.1f} s outside training ({took:.1f} s)")
    every = [s for runs in seen.values() for s in runs]
    for method, runs in seen.items():
        if runs:
            print(f"{method}: {len(runs)} runs, median {statistics.median(runs):.1f} s")
    if not every:
        print("no run finished: nothing measured")
        return 1
    print(
        f"all: {len(every)} runs, median {statistics.median(every):.1f} s, "
        f"min {min(every):.1f} s, max {max(every):.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
