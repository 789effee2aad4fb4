"""Validate the estimator on a real GPU: train catalog models with random weights for a few steps
(full, LoRA, QLoRA at two sequence lengths) and print estimated vs measured peak memory and
tokens/s per case.

    python bench/gpu_validate.py [--steps 5] [--seq-lens 512,2048] [--out PATH]
    python bench/gpu_validate.py --cpu-smoke      # tiny Llama on the CPU, same code path
    python bench/gpu_validate.py --two-gpu        # also 2 devices through the worker's launcher

Conventions follow the worker (worker/training/model.py, app/estimator/conventions.py):
micro-batch 1, bf16_true, sdpa, torch AdamW, `use_cache=False`, LoRA adapters in fp32
(`ADAPTERS_FP32`), a QLoRA base frozen by the worker's `freeze_4bit_base` (nothing upcast to
fp32). Weights are random and built on the
device; QLoRA swaps each decoder linear layer for a bitsandbytes 4-bit one (the lm_head stays
16-bit, as transformers does), so no checkpoint is written or read. An out-of-memory case is
reported as "OOM" next to the estimate's fit verdict. Without CUDA and without `--cpu-smoke` it
prints why and exits 0. On the CPU "measured" memory is the process's peak RSS (VmHWM, reset
per case through /proc/self/clear_refs), which is not what the estimator models: the smoke run
checks the code path, not the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from multi_device import TwoDeviceCase, run_two_device_cases, two_device_table

from app.catalog.loader import load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator.catalog_types import GpuSpec
from app.estimator.compute import estimate_time
from app.estimator.conventions import ADAPTERS_FP32
from app.estimator.efficiency import mfu_prior
from app.estimator.flops import flops_per_token
from app.estimator.lora import lora_trainable_params
from app.estimator.memory import estimate_memory
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import LoraSpec, Method, QLoraSpec, TrainingSpec
from app.estimator.workload import Workload
from worker.training.metering import gpu_id_for_name, peak_cpu_rss_bytes
from worker.training.model import freeze_4bit_base

GPU_MODELS = ("meta-llama/Llama-3.2-1B", "meta-llama/Meta-Llama-3-8B")
SMOKE_MODEL = "tiny-llama"
# The tiny smoke model, shaped like devtools.tinymodel's (hidden 64, 2 layers, 4 heads, 2 KV heads).
SMOKE_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
METHODS = ("full", "lora", "qlora")
LORA = LoraSpec(r=16, alpha=32, dropout=0.05, target_modules=["q_proj", "v_proj"])
QLORA = QLoraSpec(quant_type="nf4", double_quant=True)
LR = 1e-5  # any small rate: the figures measured do not depend on it
WARMUP_STEPS = 1  # the first step allocates states and picks kernels: untimed
GIB = 1024**3
# /proc/self/clear_refs: writing "5" resets the process's peak RSS (proc(5), Linux >= 4.0).
CLEAR_PEAK_RSS = "5"


@dataclass
class Case:
    """One (model, method, sequence length) run: what was estimated and what was measured."""

    model: str
    method: str
    seq_len: int
    status: str = "ok"  # "ok", "OOM" or "error: ..."
    est_allocated_gib: float = 0.0
    est_reserved_gib: float = 0.0
    est_per_gpu_gib: float = 0.0
    est_fits: bool = True
    est_tokens_per_s: float = 0.0
    meas_allocated_gib: float | None = None  # on CPU: peak RSS
    meas_reserved_gib: float | None = None
    meas_tokens_per_s: float | None = None
    achieved_tflops: float | None = None
    alloc_err_pct: float | None = None
    reserved_err_pct: float | None = None
    tps_err_pct: float | None = None
    final_loss: float | None = None


def _err(estimate: float, measured: float | None) -> float | None:
    if not measured:
        return None
    return 100.0 * (estimate - measured) / measured


def _device_gpu(device: torch.device) -> GpuSpec:
    catalog = load_catalog()
    if device.type != "cuda":
        return catalog.gpu("cpu")
    gpu_id = gpu_id_for_name(torch.cuda.get_device_name(device))
    if gpu_id is None:
        print(f"! {torch.cuda.get_device_name(device)} not in the catalog; predicting as H100")
        gpu_id = "H100-80GB-SXM"
    return catalog.gpu(gpu_id)


def estimate_case(
    config: dict[str, Any], method: Method, seq_len: int, steps: int, gpu: GpuSpec
) -> tuple[Any, float, float]:
    """The memory estimate, predicted tokens/s of one step and FLOPs per token of a case."""
    analysis = analyze_model(config)
    training = TrainingSpec(micro_batch_size=1, precision="bf16_true", attention="sdpa")
    memory = estimate_memory(
        analysis=analysis,
        method=method,
        training=training,
        lora=LORA,
        qlora=QLORA,
        seq_len=seq_len,
        num_gpus=1,
        device="cpu" if gpu.is_cpu else "cuda",
    )
    trainable = 0 if method is Method.FULL else lora_trainable_params(analysis, LORA)
    workload = Workload(
        num_examples=steps,
        tokens_per_epoch=float(steps * seq_len),
        seq_len=seq_len,
        peak_len=seq_len,
        padded_len=float(seq_len),
        epochs=1.0,
        micro_batch_size=1,
        gradient_accumulation_steps=1,
        packed=True,
    )
    timing = estimate_time(
        analysis=analysis,
        method=method,
        training=training,
        qlora=QLORA,
        workload=workload,
        lora_trainable=trainable,
        gpu=gpu,
        num_gpus=1,
        strategy="single",
        mfu=mfu_prior(gpu.mfu_class, method),
        lora=LORA,
    )
    step_s = (timing.total_s - timing.overhead_s) / steps  # no start-up, load or save here
    flops = flops_per_token(
        analysis=analysis,
        method=method,
        training=training,
        lora_trainable=trainable,
        seq_len=seq_len,
        lora=LORA,
    )
    return memory, seq_len / step_s, flops.total


def _quantize_4bit(model: torch.nn.Module, device: torch.device) -> None:
    """Replace every linear layer but the lm_head by a bitsandbytes NF4 layer (bf16 compute)."""
    import bitsandbytes as bnb

    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear) or child_name == "lm_head":
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=torch.bfloat16,
                compress_statistics=QLORA.double_quant,
                quant_type=QLORA.quant_type,
                device="meta",
            )
            weight = child.weight.data.to("cpu" if device.type == "cpu" else device)
            layer.weight = bnb.nn.Params4bit(
                weight,
                requires_grad=False,
                compress_statistics=QLORA.double_quant,
                quant_type=QLORA.quant_type,
            ).to(device)  # type: ignore[misc]  # Params4bit.to quantizes; stubs disagree
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, layer)
            del child, weight


def build_model(
    config: dict[str, Any], method: Method, device: torch.device, *, kbit_prep: bool = False
) -> Any:
    """Random-weight bf16 model on `device`, trainable as `method` says (worker conventions;
    `kbit_prep`: QLoRA through peft's prepare_model_for_kbit_training instead, fp32 upcast)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    kwargs["use_cache"] = False
    hf = AutoConfig.for_model(config["model_type"], **kwargs)
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = AutoModelForCausalLM.from_config(
            hf, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    model.config.use_cache = False
    if method is Method.FULL:
        model.requires_grad_(True)
        return model
    if method is Method.QLORA:
        _quantize_4bit(model, device)
        if kbit_prep:
            from peft import prepare_model_for_kbit_training

            model.is_loaded_in_4bit = True  # what peft's k-bit preparation checks
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        else:
            model = freeze_4bit_base(model)
    lora = LoraConfig(
        r=LORA.r,
        lora_alpha=int(LORA.alpha),
        lora_dropout=LORA.dropout,
        target_modules=list(LORA.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora, autocast_adapter_dtype=ADAPTERS_FP32)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # not Linux: the peak RSS then covers the whole run so far
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text(CLEAR_PEAK_RSS)


def train_steps(
    model: Any, *, vocab: int, seq_len: int, steps: int, device: torch.device
) -> tuple[float, float]:
    """`steps` optimizer steps on random tokens; (tokens/s after warm-up, final loss)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (1, seq_len), generator=generator).to(device)
    mask = torch.ones_like(ids)
    model.train()
    start = 0.0
    loss = torch.zeros(())
    try:
        for step in range(steps + WARMUP_STEPS):
            if step == WARMUP_STEPS:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # HF Trainer default max_grad_norm
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        final = float(loss.detach())  # host sync: all steps are done
        elapsed = time.perf_counter() - start
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer, params, loss
    return steps * seq_len / elapsed, final


def _measured(device: torch.device) -> tuple[float, float | None]:
    if device.type == "cuda":
        return (
            torch.cuda.max_memory_allocated(device) / GIB,
            torch.cuda.max_memory_reserved(device) / GIB,
        )
    return peak_cpu_rss_bytes() / GIB, None


def run_model(
    name: str, config: dict[str, Any], method: Method, args: argparse.Namespace, gpu: GpuSpec
) -> list[Case]:
    """Every sequence length of one model and method, the model built once."""
    device = args.device
    cases = [Case(name, method.value, s) for s in args.seq_lens]
    for case in cases:
        memory, tps, _ = estimate_case(config, method, case.seq_len, args.steps, gpu)
        case.est_allocated_gib = memory.allocated_bytes / GIB
        case.est_reserved_gib = memory.reserved_bytes / GIB
        case.est_per_gpu_gib = memory.per_gpu_bytes / GIB
        case.est_fits = memory.per_gpu_bytes <= gpu.memory_bytes
        case.est_tokens_per_s = tps
    model = None
    try:
        _reset_peak(device)
        model = build_model(config, method, device, kbit_prep=args.kbit_prep)
        for case in cases:
            _run_case(case, model, config, args, gpu)
    except torch.cuda.OutOfMemoryError:
        for case in cases:
            if case.meas_allocated_gib is None and case.status == "ok":
                case.status = "OOM (build)"
    finally:
        del model
        _free(device)
    return cases


def _run_case(
    case: Case, model: Any, config: dict[str, Any], args: argparse.Namespace, gpu: GpuSpec
) -> None:
    device = args.device
    _reset_peak(device)
    try:
        tps, loss = train_steps(
            model, vocab=config["vocab_size"], seq_len=case.seq_len, steps=args.steps, device=device
        )
    except torch.cuda.OutOfMemoryError:
        case.status = "OOM"
        _free(device)
        return
    except Exception as exc:  # report the case and go on with the next
        case.status = f"error: {type(exc).__name__}: {exc}"[:200]
        _free(device)
        return
    case.meas_allocated_gib, case.meas_reserved_gib = _measured(device)
    case.meas_tokens_per_s, case.final_loss = tps, loss
    _, _, flops = estimate_case(config, Method(case.method), case.seq_len, args.steps, gpu)
    case.achieved_tflops = tps * flops / 1e12
    case.alloc_err_pct = _err(case.est_allocated_gib, case.meas_allocated_gib)
    case.reserved_err_pct = _err(case.est_reserved_gib, case.meas_reserved_gib)
    case.tps_err_pct = _err(case.est_tokens_per_s, case.meas_tokens_per_s)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(cases: list[Case], *, mem_label: str) -> str:
    """The summary as fixed-width text."""
    head = (
        f"{'model':<28} {'method':<6} {'seq':>5} {'status':<8} {'est alloc':>9} "
        f"{mem_label:>9} {'err%':>6} {'est res':>8} {'meas res':>8} {'err%':>6} "
        f"{'fits':>5} {'est tok/s':>10} {'tok/s':>9} {'err%':>6} {'TFLOP/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for c in cases:
        lines.append(
            f"{c.model[-28:]:<28} {c.method:<6} {c.seq_len:>5} {c.status[:8]:<8} "
            f"{c.est_allocated_gib:>9.2f} {_fmt(c.meas_allocated_gib, '9.2f'):>9} "
            f"{_fmt(c.alloc_err_pct, '+6.1f'):>6} {c.est_reserved_gib:>8.2f} "
            f"{_fmt(c.meas_reserved_gib, '8.2f'):>8} {_fmt(c.reserved_err_pct, '+6.1f'):>6} "
            f"{'yes' if c.est_fits else 'no':>5} {c.est_tokens_per_s:>10.0f} "
            f"{_fmt(c.meas_tokens_per_s, '9.0f'):>9} {_fmt(c.tps_err_pct, '+6.1f'):>6} "
            f"{_fmt(c.achieved_tflops, '8.1f'):>8}"
        )
        if c.status.startswith("error"):
            lines.append(f"    {c.status}")
    lines.append("memory in GiB; err% = (estimate - measured) / measured")
    return "\n".join(lines)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny Llama on the CPU")
    parser.add_argument("--models", default=",".join(GPU_MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seq-lens", default="512,2048")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (plus 1 warm-up)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (text beside it)")
    parser.add_argument(
        "--two-gpu",
        action="store_true",
        help="also run each method on two devices through the worker's launcher (needs 2 GPUs; "
        "with --cpu-smoke, two CPU ranks)",
    )
    parser.add_argument(
        "--kbit-prep",
        action="store_true",
        help="QLoRA via peft's prepare_model_for_kbit_training (fp32 upcast), not the worker's",
    )
    args = parser.parse_args()
    args.seq_lens = [int(s) for s in args.seq_lens.split(",")]
    return args


def main() -> int:
    """Run every case, print the table, write JSON and text."""
    args = _parse()
    if args.cpu_smoke:
        args.device = torch.device("cpu")
        models = {SMOKE_MODEL: SMOKE_CONFIG}
        if args.seq_lens == [512, 2048]:
            args.seq_lens = [64, 128]
    elif not torch.cuda.is_available():
        print("gpu_validate: no CUDA device here; nothing measured (use --cpu-smoke to exercise).")
        return 0
    else:
        args.device = torch.device("cuda", 0)
        models = {m: get_model_config(m) for m in args.models.split(",")}
    gpu = _device_gpu(args.device)
    device_name = "cpu" if args.cpu_smoke else torch.cuda.get_device_name(args.device)
    print(f"device {device_name} (catalog {gpu.id}), {args.steps} timed steps, micro-batch 1")
    started = time.perf_counter()
    cases: list[Case] = []
    for name, config in models.items():
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            done = run_model(name, config, Method(method), args, gpu)
            cases.extend(done)
            print(f"  {name} {method}: {[c.status for c in done]} {time.perf_counter() - t0:.1f}s")
    label = "peak RSS" if args.cpu_smoke else "meas allo"
    text = table(cases, mem_label=label)
    print(text)
    two_device: list[TwoDeviceCase] = []
    if args.two_gpu:
        two_device = _two_device(args)
    print(f"total {time.perf_counter() - started:.1f}s")
    out = args.out
    if out is None and not args.cpu_smoke:
        out = Path("bench/results") / f"gpu_validate-{dt.date.today().isoformat()}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "device": device_name,
            "catalog_gpu": gpu.id,
            "steps": args.steps,
            "versions": _versions(),
            "cases": [asdict(c) for c in cases],
            "two_device_cases": [asdict(c) for c in two_device],
        }
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".txt").write_text(text + "\n")
        print(f"wrote {out} and {out.with_suffix('.txt')}")
    return 0


def _two_device(args: argparse.Namespace) -> list[TwoDeviceCase]:
    """The 2-device cases (bench/multi_device.py), or none where two devices are missing."""
    if not args.cpu_smoke and torch.cuda.device_count() < 2:
        print(f"two-device case skipped: {torch.cuda.device_count()} CUDA device(s) here")
        return []
    cases = run_two_device_cases(cpu=args.cpu_smoke, methods=args.methods.split(","))
    print(two_device_table(cases))
    return cases


def _versions() -> dict[str, str]:
    import bitsandbytes
    import peft
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


if __name__ == "__main__":
    raise SystemExit(main())
