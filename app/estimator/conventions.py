"""What full fine-tuning, LoRA and QLoRA store in which dtype, stated once.

The worker builds its models by these rules (worker/training/model.py) and the estimator counts
bytes by them (states.py, activations.py), so an estimate and a run agree on what a method is.
Dtypes are named "fp32" / "bf16" / "fp16"; each side maps the name to torch dtypes or bytes.

* **Trained weights** are fp32 under `fp32` and `*_mixed` (fp32 masters, torch.autocast computes
  in 16 bits) and 16-bit under `bf16_true`.
* **LoRA adapters are fp32** (`ADAPTERS_FP32`) unless the plan's `adapter_dtype` is bf16 (a
  memory lever, only under `bf16_true`, as the QLoRA paper's code trains them): peft's own
  default (`get_peft_model(..., autocast_adapter_dtype=True)` upcasts bf16/fp16 adapters). bf16
  keeps 8 significant bits, so an adapter update smaller than 1/256 of the weight is lost;
  adapters are well under 1% of a model's parameters, so fp32 costs little. peft then casts
  each adapter's input to fp32 too (`LoraLayer._cast_input_dtype`), which the activation count
  includes.
  `modules_to_save` copies are not adapters (peft leaves them in the base dtype): they train
  as fp32 masters under `*_mixed` (the worker upcasts them; fp16's GradScaler refuses 16-bit
  gradients) and in bf16 under `bf16_true` (`saved_module_dtype`).
* **A frozen base is stored in the compute dtype**: 16 bits under `bf16_true` and `*_mixed`
  (a frozen weight needs no fp32 master copy), fp32 under `fp32`.
* **QLoRA upcasts nothing** (`base_dtype` for QLORA is the compute dtype): linear layers are 4-bit
  (bitsandbytes, computing in the compute dtype) and embeddings, norms and lm_head stay in the
  base dtype. peft's `prepare_model_for_kbit_training` would cast every non-4-bit parameter to
  fp32; they are frozen, so that buys no update precision, RMSNorm/LayerNorm already normalise
  in fp32 and the loss upcasts logits to fp32, while an fp32 embedding and fp32 norm weights make
  the residual stream, every norm output and, through bitsandbytes' cast back to the input
  dtype, every 4-bit layer's output fp32, and no flash-attention (it needs 16-bit inputs).
  Measured on an H200 (bench/results/gpu_validate-2026-11-30*): Llama-3-8B QLoRA, micro-batch
  1 x 2048 tokens, peaks at 44.3 GiB with the upcast and 19.4 GiB without, at half the tokens/s.
  The worker only freezes the base (what prepare_model_for_kbit_training does besides the
  upcast, with checkpointing off).
* **bitsandbytes keeps only the packed weight for backward** (`ctx.tensors = (None, B)` in
  `MatMul4Bit`, bitsandbytes >= 0.43.2, PR #1270) and dequantizes one whole weight per 4-bit
  matmul, forward and backward.
"""

from __future__ import annotations

from typing import Literal

from app.estimator.spec import Method

DtypeName = Literal["fp32", "bf16", "fp16"]
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}

ADAPTERS_FP32 = True


def half_dtype(precision: str) -> DtypeName:
    """The 16-bit dtype a precision computes in (fp32 for `fp32`)."""
    if precision == "fp32":
        return "fp32"
    return "fp16" if precision.startswith("fp16") else "bf16"


def base_dtype(*, method: Method, precision: str) -> DtypeName:
    """Storage dtype of the model's own weights: trained ones for full fine-tuning, frozen ones
    (the non-4-bit part for QLoRA) otherwise."""
    if precision == "fp32":
        return "fp32"
    if precision.endswith("_mixed") and method is Method.FULL:
        return "fp32"  # fp32 master weights; autocast makes the 16-bit copies
    return half_dtype(precision)


def saved_module_dtype(*, precision: str) -> DtypeName:
    """Storage dtype of peft `modules_to_save` copies (whole modules trained beside LoRA)."""
    if precision == "fp32" or precision.endswith("_mixed"):
        return "fp32"
    return half_dtype(precision)


def adapter_dtype(*, precision: str, adapters_fp32: bool = ADAPTERS_FP32) -> DtypeName:
    """Storage (and compute) dtype of LoRA's A and B matrices."""
    if adapters_fp32 or precision == "fp32" or precision.endswith("_mixed"):
        return "fp32"
    return half_dtype(precision)
