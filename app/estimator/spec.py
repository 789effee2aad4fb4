"""Inputs of the estimator: what is being fine-tuned, on what data, how, and on which hardware.

These are plain pydantic models with bounds, shared by the API, the worker and the CLI. They carry
no HTTP or database concerns; a value outside its bounds is rejected here with the field named.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Method(StrEnum):
    """The three ways to customise a model that tunecost compares."""

    FULL = "full"
    LORA = "lora"
    QLORA = "qlora"


Optimizer = Literal[
    "adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd", "adafactor"
]
Precision = Literal["fp32", "bf16_true", "bf16_mixed", "fp16_mixed"]
Attention = Literal["sdpa", "flash_attention_2", "eager"]
Sharding = Literal["auto", "ddp", "fsdp_zero2", "fsdp_zero3"]
Pricing = Literal["on_demand", "spot", "committed"]  # committed: only when named
Padding = Literal["longest", "max_length"]
AdapterDtype = Literal["fp32", "bf16"]

# What a lever left to the planner is when memory does not need it: the settings a plain run
# uses (torch AdamW, no recomputation, peft's fp32 adapters).
DEFAULT_OPTIMIZER: Optimizer = "adamw"
DEFAULT_ADAPTER_DTYPE: AdapterDtype = "fp32"

# Bounds that reject nonsense while admitting every real run we know of.
MAX_SEQ_LEN = 1_048_576  # longest context of any catalog model is 131,072; leave headroom
MAX_EXAMPLES = 10_000_000_000  # 1e10 examples is already far past any public fine-tuning set
MAX_TOTAL_TOKENS = 100_000_000_000_000  # 1e14 tokens: ~7x the largest public pretraining runs
MAX_GPUS_PER_NODE = 8  # the largest common single-node configuration (HGX/DGX)
MAX_NODES = 64


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSpec(_Spec):
    """How the fine-tune runs; every field has the default a typical run uses."""

    epochs: float = Field(1.0, gt=0, le=1000)
    micro_batch_size: int = Field(1, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=65536)
    seq_len: int | None = Field(
        None,
        ge=1,
        le=MAX_SEQ_LEN,
        description="padded length; default: the dataset's longest example",
    )
    packing: bool = False
    padding: Padding = Field(
        "longest",
        description="without packing: pad each micro-batch to its longest example (the HF and "
        "LitGPT collators' default) or every example to seq_len",
    )
    group_by_length: bool = Field(
        False,
        description="without packing: batch examples of similar length together (sorted within "
        "shuffled groups of micro-batches, like HF Trainer's group_by_length), less padding",
    )
    gradient_checkpointing: bool | None = Field(
        None,
        description="recompute each block's activations in backward; default: the planner turns "
        "it on where memory needs it (`training` in each result says)",
    )
    optimizer: Optimizer | None = Field(
        None,
        description="default: adamw, or bitsandbytes' 8-bit / paged AdamW where memory needs it",
    )
    adapter_dtype: AdapterDtype | None = Field(
        None,
        description="LoRA/QLoRA A and B matrices: fp32 (peft's default) or bf16 (as the QLoRA "
        "paper trained them; bf16_true only); default: fp32 unless memory needs bf16",
    )
    precision: Precision = "bf16_true"
    attention: Attention = "sdpa"
    sharding: Sharding = Field("auto", description="multi-GPU strategy for full fine-tuning")

    @model_validator(mode="after")
    def _adapter_dtype_fits_precision(self) -> TrainingSpec:
        if self.adapter_dtype == "bf16" and self.precision != "bf16_true":
            raise ValueError(
                f"adapter_dtype bf16 needs precision bf16_true (under {self.precision} trained "
                "weights are fp32 masters); leave adapter_dtype out or set it to fp32"
            )
        return self

    @property
    def levers_left(self) -> frozenset[str]:
        """The memory levers this spec leaves to the planner (not set here)."""
        fields = {
            "gradient_checkpointing": self.gradient_checkpointing,
            "optimizer": self.optimizer,
            "adapter_dtype": self.adapter_dtype,
        }
        return frozenset(name for name, value in fields.items() if value is None)

    def resolved(self) -> TrainingSpec:
        """This spec with every lever left to the planner at its plain default."""
        if not self.levers_left:
            return self
        return self.model_copy(
            update={
                "gradient_checkpointing": bool(self.gradient_checkpointing),
                "optimizer": self.optimizer or DEFAULT_OPTIMIZER,
                "adapter_dtype": self.adapter_dtype or DEFAULT_ADAPTER_DTYPE,
            }
        )

    @property
    def checkpointing(self) -> bool:
        """Whether gradient checkpointing is on (off while left to the planner)."""
        return bool(self.gradient_checkpointing)

    @property
    def optimizer_name(self) -> Optimizer:
        """The optimizer in effect (adamw while left to the planner)."""
        return self.optimizer or DEFAULT_OPTIMIZER

    @property
    def adapters_fp32(self) -> bool:
        """Whether LoRA's A and B are fp32 (peft's default, and any precision but bf16_true)."""
        return self.adapter_dtype != "bf16"


class LoraSpec(_Spec):
    """The adapter: rank, scale, dropout and which modules get one."""

    r: int = Field(8, ge=1, le=4096)
    alpha: float = Field(16, gt=0, le=1_000_000)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["auto", "all-linear"] = Field(
        "auto",
        min_length=1,
        description="module names, 'all-linear', or 'auto': peft's default for the model type "
        "(all-linear where peft has none); the estimate reports what 'auto' resolved to",
    )
    modules_to_save: list[str] = Field(default_factory=list)


class QLoraSpec(_Spec):
    """The 4-bit quantization of the frozen base in QLoRA (bitsandbytes)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


class HardwareSpec(_Spec):
    """Where it runs: `gpu=None` considers every catalog GPU, `num_gpus=None` the fewest that
    fit."""

    gpu: str | None = None
    num_gpus: int | None = Field(None, ge=1, le=MAX_GPUS_PER_NODE * MAX_NODES)
    provider: str | None = None
    pricing: Pricing = "on_demand"


class DatasetShape(_Spec):
    """What the estimator needs of a dataset: how many examples and how long they are.

    Give either `num_examples` with `avg_tokens` (and ideally `max_tokens` and `min_tokens`),
    or `total_tokens`.
    """

    num_examples: int | None = Field(None, ge=1, le=MAX_EXAMPLES)
    avg_tokens: float | None = Field(None, gt=0, le=MAX_SEQ_LEN)
    max_tokens: int | None = Field(None, ge=1, le=MAX_SEQ_LEN)
    total_tokens: float | None = Field(None, ge=1, le=MAX_TOTAL_TOKENS)
    # The shortest example: what every example carries (a prompt template, a system prompt).
    # Only the length above it varies, so it sets how much a micro-batch pads (workload.py).
    min_tokens: int | None = Field(None, ge=1, le=MAX_SEQ_LEN)

    @model_validator(mode="after")
    def _enough_to_count(self) -> DatasetShape:
        if self.total_tokens is None and (self.num_examples is None or self.avg_tokens is None):
            raise ValueError("give total_tokens, or num_examples together with avg_tokens")
        check_lengths(self)
        return self


def check_lengths(shape: DatasetShape) -> None:
    """Raise ValueError unless min_tokens <= avg_tokens <= max_tokens where they are given."""
    low, mean, high = shape.min_tokens, shape.avg_tokens, shape.max_tokens
    if high is not None and mean is not None and high < mean:
        raise ValueError("max_tokens must be at least avg_tokens")
    if low is not None and mean is not None and low > mean:
        raise ValueError("min_tokens must be at most avg_tokens")
    if low is not None and high is not None and low > high:
        raise ValueError("min_tokens must be at most max_tokens")
