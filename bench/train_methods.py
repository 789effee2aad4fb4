"""Train the tiny model with full, LoRA and QLoRA through the child-process runner and print
what was metered: start-up and training time, tokens/s, peak memory, artifact size.

    python bench/train_methods.py [--steps 20] [--seq-len 128] [--micro-batch 4]

Runs on whatever device the machine has (CPU here). Figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from worker.training.runner import run_in_child
from worker.training.spec import Launch

MIB = 2**20


def main() -> None:
    """Run each method once and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--methods", default="full,lora,qlora")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "model")
        data = make_tiny_dataset(root / "data.jsonl", n=200, fmt="text")
        print(
            f"tiny Llama (hidden 64, 2 layers, vocab 512), {args.steps} steps x "
            f"{args.micro_batch} x {args.seq_len} tokens"
        )
        header = (
            f"{'method':<6} {'status':<10} {'wall s':>7} {'start s':>8} {'train s':>8} "
            f"{'tok/s':>8} {'proc tok/s':>10} {'peak MiB':>9} {'kind':>8} {'artifact KiB':>12}"
        )
        print(header)
        for method in args.methods.split(","):
            spec = {
                "method": method,
                "model": {"path": str(model)},
                "training": {
                    "micro_batch_size": args.micro_batch,
                    "seq_len": args.seq_len,
                    "packing": True,
                    "precision": "fp32",
                },
                "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
                "max_steps": args.steps,
                "eval_fraction": 0.05,
            }
            run = {"job_id": f"bench-{method}", "dataset_path": str(data), "device": "auto"}
            launch = Launch.model_validate({"spec": spec, "run": run})
            t0 = time.perf_counter()
            out = run_in_child(launch, out_dir=root / f"out-{method}")
            a = out.actuals
            if (
                out.status != "succeeded"
                or a is None
                or a.peak_memory_bytes is None
                or a.artifact_bytes is None
            ):
                print(f"{method:<6} {out.status:<10} {out.error}")
                continue
            print(
                f"{method:<6} {out.status:<10} {time.perf_counter() - t0:>7.1f} "
                f"{a.startup_s:>8.1f} {a.train_s:>8.2f} {a.tokens_per_s:>8.0f} "
                f"{a.processed_tokens_per_s:>10.0f} {a.peak_memory_bytes / MIB:>9.0f} "
                f"{a.peak_memory_kind:>8} {a.artifact_bytes / 1024:>12.0f}"
            )


if __name__ == "__main__":
    main()
