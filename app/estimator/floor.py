"""The per-step floor: host time to issue a step's work, and how it overlaps the device's.

Eager PyTorch runs a fine-tune as thousands of small operations per micro-step. The host spends
a roughly fixed time on each (Python module code, the dispatcher, the kernel launch), whatever
the tensors' size. On a GPU the launches are asynchronous: the host queues kernels ahead while
the device works through them, so a step takes about the longer of the two; on the CPU the
host runs each operation itself, so the two add. When a micro-step carries little work (a small
model, micro-batch 1, short sequences) the host's time is the step's time: four times the tokens
cost the same.

Measured on three stacks, the host floor is about the same per decoder layer:

* tunecost's own H200 runs (bench/results/gpu_validate-2026-11-30-steady-1b.txt, transformers
  5.17 + peft 0.21, torch 2.11, micro-batch 1): Llama-3.2-1B (16 layers) steps take 75.6-78.9 ms
  for full fine-tuning and LoRA at 512 and 2048 tokens alike: 4.7-4.9 ms per layer; Llama-3-8B
  (32 layers) LoRA at 512 tokens 142 ms (gpu_validate-2026-11-30.txt): 4.4 ms per layer.
* LitGPT's A100 table (Lightning-AI/litgpt tutorials/resource-tables.md, commit 8641822,
  2023-10-20, "Finetuning with LoRA on 1 GPU", time per 1k iterations = 1k micro-batches):
  phi-1.5 (24 layers) 97 / 99 / 102 ms at micro-batch 1 / 2 / 4 (4.0-4.25 ms per layer);
  StableLM-3B (16 layers) 74 ms; Llama 2 7B (32) 142 ms; Llama 2 13B (40) 191 ms.
* PEFT's MetaMathQA runs on an L40S (huggingface/peft method_comparison, llama-3.2-3B, 28
  layers, micro-batch 4 of ~210 tokens): LoRA r32 124 ms per micro-step (4.4 ms per layer).

The constants below are those per-layer figures; 4-bit layers, LoRA adapters and the optimizer
add their own operations. A worker measures its own host's floor at start (`DeviceSpeed`) and
calibration learns a factor on the modelled floor per (GPU kind, method) from finished jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

# Host seconds per decoder layer per micro-step (forward and backward of one layer), eager
# PyTorch + transformers: the H200, A100 (LitGPT) and L40S (PEFT) figures of the module
# docstring, 4.0-4.9 ms per layer with the adapters and the fixed part of a step included;
# 4.2 ms for the layer alone leaves those their share (fitted with bench/gpu_rescore.py).
HOST_S_PER_LAYER = 3.8e-3
# Gradient checkpointing runs each layer's forward again: the forward issues about a third of
# a layer's operations (backward about twice forward's: autograd's two gradient kernels per op).
CHECKPOINT_HOST_FACTOR = 4.0 / 3.0
# Each LoRA adapter (peft lora.Linear) adds a dropout, two small matmuls, a scale and an add in
# forward, their gradients in backward and two dtype casts (fp32 adapters): ~20 operations
# at the ~10 us per operation of an eager step (H. He, "Making Deep Learning Go Brrrr From
# First Principles", 2022: PyTorch's per-op overhead). Consistent with the H200: LoRA on q,v
# (2 adapters a layer) runs 1.8 ms (2%) slower per step than full fine-tuning of Llama-3.2-1B.
HOST_S_PER_ADAPTER = 0.2e-3
# Each bitsandbytes 4-bit layer runs its own autograd function that dequantizes the weight in
# forward and again in backward (bitsandbytes MatMul4Bit). H200, Llama-3.2-1B (112 4-bit
# layers): QLoRA steps take 90.5-92.9 ms against LoRA's 77.4-78.9 at 20 steps (0.12 ms per
# layer) and 120-135 ms over 3 steps (0.4 ms); LitGPT A100 Llama 2 7B (224 layers, bnb 0.41):
# QLoRA 221 ms against LoRA's 142 ms per iteration (0.35 ms per layer). 0.3 ms is their middle.
HOST_S_PER_4BIT_LAYER = 0.35e-3
# Per micro-step outside the layers: embedding, LM head and loss, the batch from the data
# loader to the device. The LitGPT phi-1.5 rows (97-102 ms for 24 layers, micro-batch 1-4)
# leave at most a few ms beside 24 x 4.0 ms.
HOST_S_PER_MICRO_STEP = 2e-3
# Per optimizer step: torch's multi-tensor AdamW and clip_grad_norm_ launch a few kernels per
# chunk of tensors, then zero_grad; a few ms whatever the model (H200: 1B full steps are no
# slower than LoRA's at the floor).
HOST_S_PER_OPTIMIZER_STEP = 3e-3

# How host and device time combine per step: (host^p + device^p)^(1/p). p = 1 adds them (the
# CPU, which runs each operation itself); a large p takes the longer of the two (a GPU whose
# launch queue never empties). Between, a GPU step waits on the host where the two are close:
# H200 Llama-3-8B LoRA steps take 142 ms at 512 tokens (host-bound) and 164-167 ms at 2048
# (device ~150 ms): p = 4 reproduces both; p = 2 puts the 2048 step at ~205 ms.
OVERLAP_POWER_GPU = 4.0
OVERLAP_POWER_CPU = 1.0


@dataclass(frozen=True)
class HostFloor:
    """Modelled host seconds of one micro-step and of one optimizer step."""

    micro_s: float
    optimizer_s: float

    def per_step(self, accumulation: int) -> float:
        """Host seconds of one optimizer step of `accumulation` micro-steps."""
        return accumulation * self.micro_s + self.optimizer_s


def host_floor(
    *,
    num_layers: int,
    adapters: int,
    four_bit_layers: int,
    checkpointing: bool,
    seconds_per_layer: float = HOST_S_PER_LAYER,
) -> HostFloor:
    """The host's time to issue one micro-step and one optimizer step.

    `seconds_per_layer` is HOST_S_PER_LAYER unless the device's own host was measured; the
    other terms scale with it (they are the same kind of eager operations).
    """
    scale = seconds_per_layer / HOST_S_PER_LAYER
    layers = num_layers * (CHECKPOINT_HOST_FACTOR if checkpointing else 1.0)
    micro = (
        layers * HOST_S_PER_LAYER
        + adapters * HOST_S_PER_ADAPTER
        + four_bit_layers * HOST_S_PER_4BIT_LAYER
        + HOST_S_PER_MICRO_STEP
    )
    return HostFloor(micro_s=micro * scale, optimizer_s=HOST_S_PER_OPTIMIZER_STEP * scale)


def overlap_power(*, is_cpu: bool) -> float:
    """How host and device time combine on this kind of device (see OVERLAP_POWER_GPU)."""
    return OVERLAP_POWER_CPU if is_cpu else OVERLAP_POWER_GPU


def overlapped(host_s: float, device_s: float, power: float) -> float:
    """Seconds of a step whose host needs `host_s` and whose device needs `device_s`."""
    if host_s <= 0 or device_s <= 0:
        return max(host_s, 0.0) + max(device_s, 0.0)
    big = max(host_s, device_s)
    return float(big * ((host_s / big) ** power + (device_s / big) ** power) ** (1.0 / power))
