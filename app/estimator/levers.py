"""Memory levers: settings that trade a little time, or none, for memory, tried before more GPUs.

Each lever is a setting of the job's `TrainingSpec` that the worker applies as written
(worker/training/model.py, optim.py, job.py), so a plan that needs one runs with it:

* **8-bit AdamW** (`adamw_8bit`, bitsandbytes `AdamW8bit`): both Adam moments in one byte per
  element with an fp32 absmax per 256 (states.py counts them exactly); it matches 32-bit Adam's
  accuracy (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization") and its fused
  step reads fewer bytes, so it costs no time.
* **bf16 adapters** (`adapter_dtype: bf16`, LoRA/QLoRA under `bf16_true`): A and B and the copy
  of each adapted layer's input that peft casts for them in bf16 instead of fp32, as the QLoRA
  paper's code trains them; their updates keep 8 significant bits.
* **micro-batch split**: the same global batch (micro-batch x accumulation) in smaller
  micro-batches, so activations shrink with the micro-batch; the loss is the same (the worker
  weights each micro-batch by its loss tokens), each weight is streamed more often.
* **gradient checkpointing**: each block keeps only its input and recomputes its forward in
  backward: activations fall to about one block's, at the cost of that forward again.
* **paged AdamW** (`paged_adamw_8bit`): the optimizer states in CUDA unified memory, which the
  driver pages to host memory while activations peak and back for the step (the QLoRA paper's
  paged optimizers); what pages costs its transfer over the host link each step.

The planner leaves alone any lever the request set, and among the settings that fit it takes the
fastest, so a lever is on only where memory needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from app.estimator.results import LeverName
from app.estimator.spec import (
    DEFAULT_ADAPTER_DTYPE,
    DEFAULT_OPTIMIZER,
    Method,
    Optimizer,
    TrainingSpec,
)

# A lever's name as results report it, with the words the reasons use.
LEVER_NAMES: dict[LeverName, str] = {
    "optimizer_8bit": "8-bit AdamW",
    "adapter_bf16": "bf16 adapters",
    "micro_batch": "smaller micro-batches",
    "gradient_checkpointing": "gradient checkpointing",
    "paged_optimizer": "paged AdamW",
}
# From what the request left open, in the order the reasons list them.
LEVER_ORDER = tuple(LEVER_NAMES)

# Host link a paged optimizer state crosses: PCIe 4.0 x16 moves ~25 GB/s per direction in
# practice (32 GB/s raw; NVIDIA's bandwidthTest on A100 hosts); PCIe 5.0 hosts are faster, so
# this is the conservative side.
HOST_LINK_BYTES_PER_S = 25e9


@dataclass(frozen=True)
class LeverChoice:
    """One setting of the levers: the training spec the job would run with, and what is on."""

    training: TrainingSpec  # every lever decided
    levers: tuple[LeverName, ...]  # the levers the planner turned on, in LEVER_ORDER

    @property
    def plain(self) -> bool:
        """No lever turned on by the planner."""
        return not self.levers


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def lever_choices(
    training: TrainingSpec, *, method: Method, pageable: bool = True
) -> list[LeverChoice]:
    """Every setting of the levers `training` leaves open, the plain one first and the one with
    every lever on last. `pageable`: the device has unified memory to page to (not a CPU)."""
    left = training.levers_left
    peft = method is not Method.FULL
    optimizers: list[Optimizer] = [training.optimizer_name]
    if "optimizer" in left:
        optimizers = [DEFAULT_OPTIMIZER, "adamw_8bit"] + (["paged_adamw_8bit"] if pageable else [])
    checkpointing = [False, True] if "gradient_checkpointing" in left else [training.checkpointing]
    adapters = [training.adapter_dtype or DEFAULT_ADAPTER_DTYPE]
    if "adapter_dtype" in left and peft and training.precision == "bf16_true":
        adapters = [DEFAULT_ADAPTER_DTYPE, "bf16"]
    micro, accum = training.micro_batch_size, training.gradient_accumulation_steps
    splits = _divisors_desc(micro)
    out: list[LeverChoice] = []
    for optimizer, ckpt, adapter, size in product(optimizers, checkpointing, adapters, splits):
        on: list[LeverName] = []
        if "optimizer" in left and optimizer != DEFAULT_OPTIMIZER:
            on.append("optimizer_8bit")
            if optimizer.startswith("paged"):
                on.append("paged_optimizer")
        if adapter == "bf16" and "adapter_dtype" in left:
            on.append("adapter_bf16")
        if size != micro:
            on.append("micro_batch")
        if ckpt and "gradient_checkpointing" in left:
            on.append("gradient_checkpointing")
        spec = training.model_copy(
            update={
                "optimizer": optimizer,
                "gradient_checkpointing": ckpt,
                "adapter_dtype": adapter,
                "micro_batch_size": size,
                "gradient_accumulation_steps": accum * (micro // size),
            }
        )
        levers = tuple(name for name in LEVER_ORDER if name in on)
        out.append(LeverChoice(spec, levers))
    # plain first, then by how many levers are on; the last has them all
    out.sort(key=lambda c: (len(c.levers), c.levers))
    return out


def without(choice: LeverChoice, lever: LeverName, plain: TrainingSpec) -> TrainingSpec:
    """`choice`'s training with `lever` set back to what `plain` (no lever on) has."""
    spec = choice.training
    if lever == "optimizer_8bit":
        # the optimizer as asked, paged or not as chosen
        return spec.model_copy(update={"optimizer": plain.optimizer_name})
    if lever == "paged_optimizer":
        return spec.model_copy(update={"optimizer": "adamw_8bit"})
    if lever == "adapter_bf16":
        return spec.model_copy(update={"adapter_dtype": plain.adapter_dtype})
    if lever == "micro_batch":
        return spec.model_copy(
            update={
                "micro_batch_size": plain.micro_batch_size,
                "gradient_accumulation_steps": plain.gradient_accumulation_steps,
            }
        )
    return spec.model_copy(update={"gradient_checkpointing": False})
