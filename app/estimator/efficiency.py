"""Efficiency priors: the fraction of peak a fine-tune reaches, before any calibration.

`mfu` here is the fraction of dense peak FLOP/s achieved on the FLOPs the run actually executes
(recompute included; PaLM's "hardware FLOPs utilisation"), after the bandwidth-bound terms of
`compute.py` are accounted for separately. Calibration from finished jobs replaces these priors
per (GPU, method); until then they are informed guesses and are labelled `basis="prior"`.
"""

from __future__ import annotations

from app.estimator.spec import Method

# Fraction of dense peak reached by the matmul-bound part of an HF/PEFT fine-tune, by GPU class.
# Anchors: PaLM reaches 46% MFU on a tuned stack (Chowdhery et al. 2022, table 3); MosaicML
# llm-foundry reports ~0.40-0.50 on A100 and ~0.35-0.40 on H100 for 7B-70B bf16 training with
# FSDP + flash attention (llm-foundry `scripts/train/benchmarking/README.md`); eager-mode HF/PEFT
# fine-tunes sit lower, ~0.30-0.45 on A100/H100. Hopper is harder to keep fed than Ampere, so its
# fraction is lower. LoRA/QLoRA count fewer FLOPs per token (no weight gradients) but keep the
# same per-step overheads (norms, softmax, dropout, kernel launches), so their fraction is lower;
# QLoRA also runs bitsandbytes 4-bit matmul paths that are slower than cuBLAS bf16 beyond the
# dequantization traffic modelled in compute.py (Dettmers et al. 2023, QLoRA, section 4 notes
# the speed cost). Consumer/workstation and older parts reach less of their (often
# power-limited) datasheet peak. MI300X: third-party training benchmarks of the ROCm PyTorch
# stack report well under H100's achieved fraction (SemiAnalysis, "MI300X vs H100", Dec 2024).
MFU_PRIORS: dict[str, dict[Method, float]] = {
    "hopper": {Method.FULL: 0.35, Method.LORA: 0.30, Method.QLORA: 0.22},
    "ampere_dc": {Method.FULL: 0.42, Method.LORA: 0.36, Method.QLORA: 0.27},
    "ampere_ga10x": {Method.FULL: 0.36, Method.LORA: 0.31, Method.QLORA: 0.23},
    "ada": {Method.FULL: 0.36, Method.LORA: 0.31, Method.QLORA: 0.23},
    "legacy": {Method.FULL: 0.30, Method.LORA: 0.25, Method.QLORA: 0.18},
    "cdna3": {Method.FULL: 0.25, Method.LORA: 0.21, Method.QLORA: 0.15},
    # CPU: the catalog's `cpu` peak is itself an order of magnitude; calibrate before trusting.
    "cpu": {Method.FULL: 0.30, Method.LORA: 0.25, Method.QLORA: 0.10},
}
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

# Fixed start-up per run (container start, CUDA context, tokenisation, first compile): about a
# minute in HF Trainer runs; and a read rate for the weights from local NVMe or a warm cache.
STARTUP_SECONDS = 60.0
WEIGHT_LOAD_GBPS = 1.0  # GB/s; S3/hub downloads are slower, a page-cached file faster


def mfu_prior(mfu_class: str, method: Method) -> float:
    """The prior efficiency for a GPU class and method."""
    table = MFU_PRIORS.get(mfu_class, MFU_PRIORS[DEFAULT_MFU_CLASS])
    return table[method]
