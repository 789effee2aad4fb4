"""The 2-device case of bench/gpu_validate.py: the worker's real launcher on two GPUs.

For each method it trains the same small Llama (random weights, written to a folder as the worker
loads models) twice through `worker.training.runner.run_job`: on two devices, and on one device
with twice the gradient accumulation (the same global batch). It prints the strategy, each rank's
peak memory beside the estimator's per-GPU figure for that strategy, and the largest difference
between the two runs' per-step losses: at the level of fp32 rounding on the CPU (the 2-rank test
in tests/training/test_distributed.py holds it to 1e-4), and of bf16 rounding on GPUs, where the
weights are bf16 (`bf16_true`). LoRA dropout is 0: each rank draws its own dropout masks.

    python bench/gpu_validate.py --two-gpu                # needs two CUDA devices
    python bench/gpu_validate.py --two-gpu --cpu-smoke    # the same path on two CPU ranks
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.estimator.memory import estimate_memory
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import LoraSpec, Method, QLoraSpec, TrainingSpec
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from worker.training.messages import PipeMessage, ProgressEvent
from worker.training.runner import RunOutcome, run_job
from worker.training.spec import parse_launch

# On GPUs a model big enough that sharding shows in the peaks (~110M parameters), on the CPU one
# that trains in seconds.
GPU_SHAPE: dict[str, Any] = {
    "vocab_size": 8192,
    "hidden_size": 1024,
    "layers": 8,
    "heads": 16,
    "kv_heads": 4,
}
CPU_SHAPE: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
}
STEPS = 5
MICRO_BATCH = 2
EXAMPLES = 256
GIB = 1024**3
LORA = LoraSpec(r=8, alpha=16, dropout=0.0, target_modules="all-linear")  # dropout 0: see above


@dataclass
class TwoDeviceCase:
    """One method on two devices against one device with the same global batch."""

    method: str
    status: str = "ok"
    strategy: str | None = None
    world_size: int | None = None
    est_per_gpu_gib: float | None = None
    meas_per_rank_gib: list[float] = field(default_factory=list)
    one_device_gib: float | None = None
    max_loss_diff: float | None = None
    losses_two: list[float] = field(default_factory=list)
    losses_one: list[float] = field(default_factory=list)


def _run(raw: dict[str, Any], *, devices: list[str], out: Path) -> tuple[RunOutcome, list[float]]:
    losses: list[float] = []

    def on_event(message: PipeMessage) -> None:
        if isinstance(message, ProgressEvent):
            losses.append(message.loss)

    outcome = run_job(parse_launch(raw), devices=devices, out_dir=out, on_event=on_event)
    return outcome, losses


def _estimate_gib(model_dir: Path, method: Method, strategy: str, *, seq_len: int) -> float:
    """The estimator's per-GPU peak for this run on two GPUs with `strategy`."""
    analysis = analyze_model(json.loads((model_dir / "config.json").read_text()))
    estimate = estimate_memory(
        analysis=analysis,
        method=method,
        training=TrainingSpec(micro_batch_size=MICRO_BATCH, precision="bf16_true"),
        lora=LORA,
        qlora=QLoraSpec(),
        seq_len=seq_len,
        num_gpus=2,
        sharding=strategy,
        device="cuda",
    )
    return float(estimate.per_gpu_bytes) / GIB


def run_two_device_cases(*, cpu: bool, methods: list[str]) -> list[TwoDeviceCase]:
    """Every method on two devices and on one; the figures side by side."""
    cases: list[TwoDeviceCase] = []
    with tempfile.TemporaryDirectory(prefix="tunecost-two-device-") as tmp:
        work = Path(tmp)
        model_dir = make_tiny_model(work / "model", **(CPU_SHAPE if cpu else GPU_SHAPE))
        data = make_tiny_dataset(work / "data.jsonl", n=EXAMPLES)
        devices = ["cpu:0", "cpu:1"] if cpu else ["0", "1"]
        for method in methods:
            if cpu and method == "qlora":
                continue  # bitsandbytes' CPU path trains, but its figures mean nothing here
            case = TwoDeviceCase(method=method)
            spec: dict[str, Any] = {
                "method": method,
                "model": {"path": str(model_dir)},
                "training": {
                    "micro_batch_size": MICRO_BATCH,
                    "precision": "fp32" if cpu else "bf16_true",
                },
                "lora": LORA.model_dump(mode="json"),
                "max_steps": STEPS,
                "eval_fraction": 0.0,
                "learning_rate": 1e-4,
                "num_gpus": 2,
            }
            run = {
                "job_id": f"two-{method}",
                "dataset_path": str(data),
                "device": "cpu" if cpu else "cuda",
            }
            two, case.losses_two = _run(
                {"spec": spec, "run": run}, devices=devices, out=work / f"{method}-2"
            )
            one_spec = {
                **spec,
                "num_gpus": 1,
                "training": {**spec["training"], "gradient_accumulation_steps": 2},
            }
            one, case.losses_one = _run(
                {"spec": one_spec, "run": {**run, "job_id": f"one-{method}"}},
                devices=devices[:1],
                out=work / f"{method}-1",
            )
            if two.status != "succeeded" or one.status != "succeeded":
                case.status = f"error: {two.error or one.error}"
                cases.append(case)
                continue
            act, single = two.actuals, one.actuals
            assert act is not None and single is not None  # both succeeded
            case.strategy = act.strategy
            case.world_size = act.world_size
            case.meas_per_rank_gib = [b / GIB for b in act.peak_memory_per_rank_bytes or []]
            case.one_device_gib = (single.peak_memory_bytes or 0) / GIB
            pairs = list(zip(case.losses_two, case.losses_one, strict=False))
            case.max_loss_diff = max((abs(a - b) for a, b in pairs), default=None)
            if not cpu and case.strategy:
                seq_len = int(act.data.get("seq_len") or 1)
                case.est_per_gpu_gib = _estimate_gib(
                    model_dir, Method(method), case.strategy, seq_len=seq_len
                )
            cases.append(case)
    return cases


def two_device_table(cases: list[TwoDeviceCase]) -> str:
    """The cases as a text table."""
    lines = [
        f"{'method':<7} {'strategy':<11} {'ranks':>5} {'est/GPU':>8} {'rank peaks GiB':<18} "
        f"{'1-dev GiB':>9} {'max |dloss|':>11}  status"
    ]
    for c in cases:
        peaks = ",".join(f"{g:.2f}" for g in c.meas_per_rank_gib) or "-"
        est = f"{c.est_per_gpu_gib:.2f}" if c.est_per_gpu_gib is not None else "-"
        one = f"{c.one_device_gib:.2f}" if c.one_device_gib is not None else "-"
        diff = f"{c.max_loss_diff:.2e}" if c.max_loss_diff is not None else "-"
        lines.append(
            f"{c.method:<7} {c.strategy or '-':<11} {c.world_size or '-':>5} {est:>8} "
            f"{peaks:<18} {one:>9} {diff:>11}  {c.status}"
        )
    return "\n".join(lines)
