"""Efficiency priors: the fraction of peak a fine-tune reaches, before any calibration.

`mfu` here is the fraction of dense peak FLOP/s achieved on the FLOPs the run actually executes
(recompute included; PaLM's "hardware FLOPs utilisation"), after the bandwidth-bound terms of
`compute.py` are accounted for separately. Calibration from finished jobs replaces these priors
per (GPU, method); until then they are informed guesses and are labelled `basis="prior"`.
"""

from __future__ import annotations

from app.estimator.catalog_types import GpuSpec
from app.estimator.spec import Method

# Fraction of dense peak the matmuls of a fine-tune reach when each carries plenty of work
# (see MATMUL_HALF_WORK for less), by GPU class. What is not a matmul is modelled apart
# (compute.py: weight streaming, elementwise work, dequantization, the optimizer; floor.py: the
# host), so the figure is the same for every method. Anchor: the H200 runs of bench/results/
# (transformers 5.17, torch 2.11, bench/gpu_rescore.py): 0.55 fits Llama-3.2-1B and Llama-3-8B
# full, LoRA and QLoRA at 512-8192 tokens a step within 21% tokens/s. cuBLAS reaches ~70-80% of
# the dense peak on large bf16 GEMMs on A100 and H100 (NVIDIA's "Matrix Multiplication
# Background User's Guide", GEMM performance figures), Hopper less of its much higher peak than
# Ampere does of its own (MosaicML llm-foundry benchmarking README: ~0.40-0.50 MFU on A100,
# ~0.35-0.40 on H100 for the same models), so Ampere's share is set a fifth higher, as the
# earlier per-class priors were. Consumer/workstation and older parts reach less of their
# (often power-limited) datasheet peak. MI300X: third-party training benchmarks of the ROCm
# PyTorch stack report well under H100's achieved fraction (SemiAnalysis, "MI300X vs H100",
# Dec 2024).
_MATMUL_SHARE: dict[str, float] = {
    "hopper": 0.55,
    "ampere_dc": 0.66,
    "ampere_ga10x": 0.57,
    "ada": 0.68,
    "legacy": 0.47,
    "cdna3": 0.39,
    # CPU: the catalog's `cpu` peak is itself an order of magnitude; a worker's measurement of
    # its own CPU (worker/speed.py) replaces it, and calibration after that.
    "cpu": 0.47,
}
MFU_PRIORS: dict[str, dict[Method, float]] = {
    cls: dict.fromkeys(Method, share) for cls, share in _MATMUL_SHARE.items()
}
# On a device whose speed a worker measured (worker/speed.py), peak is the sustained rate of
# large square matmuls, not the datasheet's: a training step's matmuls reach about this share
# of it. cuBLAS sustains ~75% of the dense datasheet peak on large bf16 GEMMs (NVIDIA's "Matrix
# Multiplication Background User's Guide"), and the H200 runs reach 0.55 of the datasheet
# (hopper above): 0.55 / 0.75.
MEASURED_MATMUL_SHARE = 0.73
DEFAULT_MFU_CLASS = "ampere_ga10x"  # a middle value for a GPU class without priors

# Elementwise kernels (optimizer step, dequantization, weight streaming) reach ~80-90% of peak
# memory bandwidth on A100/H100 (BabelStream results; NVIDIA's STREAM-like measurements); 0.8
# leaves room for the many small tensors of a real model.
BANDWIDTH_EFFICIENCY = 0.8

# NCCL all-reduce/all-gather reach ~70-80% of the link's one-direction bandwidth as "bus
# bandwidth" at large message sizes (nccl-tests PERFORMANCE.md; NVIDIA DGX A100 results).
COMM_EFFICIENCY = 0.7

# DDP buckets gradients and overlaps their all-reduce with the rest of backward; FSDP prefetches
# the next all-gather. About half of the communication hides behind compute at fine-tuning
# sizes (PyTorch DDP paper, Li et al. 2020, fig. 9; FSDP paper, Zhao et al. 2023, section 6).
COMM_OVERLAP = 0.5

# Between nodes: one 400 Gb/s (50 GB/s) network per 8-GPU node, as on AWS p4d (EFA 400 Gbps),
# shared by the node's GPUs. Faster fabrics (p5: 3200 Gbps) only make this conservative.
INTER_NODE_GBPS_PER_NODE = 50.0

# Seconds a run spends outside its training loop besides reading the weights (process start
# and imports, CUDA context, tokenizing, evaluation, saving), per device class, measured:
# - GPU: the H200 job of bench/results/gpu_job-2026-11-30.txt ran 69.7 s, 46.8 s of it in the
#   training loop: 23.0 s outside it, 2.5 s of which are its 2.5 GB of weights and adapter at
#   WEIGHT_LOAD_GBPS (counted apart), so 20.5 s.
GPU_STARTUP_SECONDS = 20.5
# - CPU: `make demo`'s LoRA and QLoRA jobs (tiny model, 40 steps) on this project's 2-core CPU
#   machine, through the worker's training child (`PYTHONPATH=. python bench/startup.py`): 10
#   runs in two sittings, 15.3-27.4 s, median 20.8 s. Most of it is the child's start and its
#   imports (torch, transformers, peft, bitsandbytes), which grow with the machine's load: ~19 s
#   at a load average of 7, ~25 s at 12.
CPU_STARTUP_SECONDS = 20.8
WEIGHT_LOAD_GBPS = 1.0  # GB/s; S3/hub downloads are slower, a page-cached file faster


def startup_seconds(gpu: GpuSpec) -> float:
    """The start-up prior of a run on `gpu`'s device class (until calibration learns it)."""
    return CPU_STARTUP_SECONDS if gpu.is_cpu else GPU_STARTUP_SECONDS


def mfu_prior(mfu_class: str, method: Method) -> float:
    """The prior efficiency for a GPU class and method."""
    table = MFU_PRIORS.get(mfu_class, MFU_PRIORS[DEFAULT_MFU_CLASS])
    return table[method]


# Matmuls reach their large-size efficiency (the priors above) only once each carries enough
# work: a micro-batch's tokens times the model's width (its hidden size). At this work they
# reach half of it (efficiency = prior x work / (work + MATMUL_HALF_WORK)): small tiles leave
# most of a GPU's multiprocessors idle and cannot hide the memory latency of the weights they
# read. Fitted to the H200 runs of bench/results/: Llama-3-8B full fine-tuning at 512 tokens
# x 4096 wide (work 2.1M) takes 232 ms a step, 2048 x 4096 takes 313 ms, which with the
# modelled optimizer step, streaming and host floor leaves ~0.3 and ~0.45 of peak.
MATMUL_HALF_WORK = 1.0e6
# A CPU has a few cores, not a hundred multiprocessors to fill: its matmuls reach their rate at
# tiles of a few dozen rows, and what small layers cost beyond it is in the host time per layer
# a worker measures on a tiny model (worker/speed.py). No roll-off on the CPU.
MATMUL_HALF_WORK_CPU = 0.0


def matmul_efficiency(
    mfu: float, *, tokens: float, width: int, half_work: float = MATMUL_HALF_WORK
) -> float:
    """The efficiency matmuls of `tokens` x `width` reach, `mfu` being that of large ones."""
    work = max(tokens, 1.0) * max(width, 1)
    return mfu * work / (work + half_work)
