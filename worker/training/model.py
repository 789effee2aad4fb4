"""Load the base model and tokenizer and make them trainable for the requested method.

full: every parameter trains. lora: a peft LoRA adapter on the chosen modules. qlora: the base is
quantized to 4 bits by bitsandbytes at load time, frozen, then gets LoRA. Which tensor is stored
in which dtype follows `app.estimator.conventions`, the rules the memory estimate counts by.
Remote code is never run. On the CPU everything trains in fp32 (bf16 matmuls on CPUs are slow
and pure-bf16 updates lose small steps), whatever precision was requested; the result says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.estimator.conventions import adapter_dtype, base_dtype
from app.estimator.lora_defaults import resolve_lora_targets
from app.estimator.model_notes import worker_refusal
from app.estimator.spec import Method
from app.jobs.spec import JobSpec
from worker.training.errors import JobSpecError, ModelLoadError, UnsupportedOnDevice
from worker.training.spec import Launch

_TRUTHY = {"1", "true", "yes", "on"}
# Files of a hub repo that loading a transformers model never reads: other frameworks' weights
# and exports, kept out of the cache when a snapshot is downloaded.
HUB_UNUSED_FILES = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.gguf", "*.tflite", "*.mlmodel"]
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionPlan:
    """How tensors are stored and computed for a requested precision on a device."""

    requested: str
    used: str
    load_dtype: torch.dtype  # dtype of full fine-tuning's weights (trainable masters)
    autocast_dtype: torch.dtype | None  # mixed precision: matmuls run in this dtype
    grad_scaler: bool  # fp16 mixed precision needs loss scaling
    compute_dtype: str  # "bf16" | "fp16" | "fp32": which peak FLOP/s applies


@dataclass
class LoadedModel:
    """The trainable model, its tokenizer and what was decided while loading."""

    model: Any
    tokenizer: Any
    precision: PrecisionPlan
    trainable_params: int
    total_params: int


def resolve_precision(requested: str, *, device_type: str, bf16_ok: bool) -> PrecisionPlan:
    """The precision plan for `requested` on `device_type`; raise where the device cannot do it."""
    fp32 = PrecisionPlan(requested, "fp32", torch.float32, None, False, "fp32")
    if device_type == "cpu" or requested == "fp32":
        return fp32
    if requested.startswith("bf16") and not bf16_ok:
        raise UnsupportedOnDevice(
            f"precision {requested}", "this GPU (no bf16)", "use fp16_mixed or fp32"
        )
    if requested == "bf16_true":
        return PrecisionPlan(requested, requested, torch.bfloat16, None, False, "bf16")
    if requested == "bf16_mixed":
        return PrecisionPlan(requested, requested, torch.float32, torch.bfloat16, False, "bf16")
    if requested == "fp16_mixed":
        return PrecisionPlan(requested, requested, torch.float32, torch.float16, True, "fp16")
    raise JobSpecError(f"unknown precision {requested!r}")


def _offline(launch: Launch) -> bool:
    if launch.run.offline is not None:
        return launch.run.offline
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUTHY


def hub_snapshot(hub_id: str, *, offline: bool) -> str:
    """The folder of a hub model in the worker's Hugging Face cache, never a path the id names.

    `from_pretrained(hub_id)` would load a folder of that name relative to the working directory
    before it looks at the Hub; here the id only ever names a repo, and what is loaded is the
    cache's snapshot of it (downloaded into the cache first unless the worker is offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return str(
            snapshot_download(
                repo_id=hub_id,
                cache_dir=HF_HUB_CACHE,
                local_files_only=offline,
                ignore_patterns=HUB_UNUSED_FILES,
            )
        )
    except Exception as exc:  # not cached, not on the Hub, no network: all "cannot load"
        where = "in this worker's Hugging Face cache" if offline else "on the Hub or in the cache"
        raise ModelLoadError(f"model {hub_id} is not {where} ({type(exc).__name__})") from exc


def resolve_model_source(launch: Launch) -> str:
    """The folder to load: a hub id's snapshot in the hub cache, or a model folder, which must
    sit in a model root, exist and hold a config."""
    model, roots_allowed = launch.spec.model, launch.run.model_roots
    if model.hub_id is not None:
        return hub_snapshot(model.hub_id, offline=_offline(launch))
    path = Path(model.path or "").expanduser().resolve()
    if roots_allowed is not None:
        roots = [Path(r).expanduser().resolve() for r in roots_allowed]
        if not any(path.is_relative_to(root) for root in roots):
            raise ModelLoadError(f"model path {path} is outside the allowed model roots")
    if not path.is_dir():
        raise ModelLoadError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"not a model folder (no config.json): {path}")
    return str(path)


def load_model(launch: Launch, *, device: torch.device, bf16_ok: bool) -> LoadedModel:
    """Load tokenizer and model for the job onto `device`, trainable as its method asks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = launch.spec
    source = resolve_model_source(launch)
    label = spec.model.hub_id or source  # messages name the hub id, not its cache folder
    precision = resolve_precision(spec.training.precision, device_type=device.type, bf16_ok=bf16_ok)
    attention = spec.training.attention
    if attention == "flash_attention_2" and device.type != "cuda":
        raise UnsupportedOnDevice("attention flash_attention_2", device.type, "use sdpa or eager")
    # The source is a local folder either way (a hub id's snapshot in the cache): nothing else
    # is fetched, and remote code never runs.
    common: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
    _check_trainable(source, common, label=label)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    except Exception as exc:  # OSError, ValueError, HF hub errors: all mean "cannot load"
        raise ModelLoadError(f"cannot load the tokenizer from {label}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        # Padding positions are masked by attention_mask and labels, so any id will do.
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {**common, _dtype_kwarg(): base_torch_dtype(spec.method, precision)}
    kwargs["attn_implementation"] = attention
    if spec.method is Method.QLORA:
        kwargs["quantization_config"] = _bnb_config(spec, precision)
        kwargs["device_map"] = {"": str(device)}
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except ImportError as exc:  # flash-attn or bitsandbytes missing
        raise UnsupportedOnDevice(
            f"attention {attention} / quantization", device.type, str(exc)
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model from {label}: {exc}") from exc
    if spec.method is Method.QLORA:
        keep_4bit_training_layout(model)
    else:
        model.to(device)
    model.config.use_cache = False  # the KV cache is useless in training and breaks checkpointing
    model = _make_trainable(model, spec, precision)
    if precision.autocast_dtype is not None:
        upcast_trained_to_fp32(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return LoadedModel(model, tokenizer, precision, trainable, total)


def _check_trainable(source: str, common: dict[str, Any], *, label: str) -> None:
    """Refuse before loading weights a model this loop cannot train (encoder-decoder)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, **common)
    except Exception as exc:  # OSError, ValueError, HF hub errors: all mean "cannot load"
        raise ModelLoadError(f"cannot load the model config from {label}: {exc}") from exc
    refusal = worker_refusal(
        model_type=str(config.model_type),
        is_encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)),
    )
    if refusal:
        raise JobSpecError(refusal)


def base_torch_dtype(method: Method, precision: PrecisionPlan) -> torch.dtype:
    """dtype the base model is loaded in (its non-4-bit part for QLoRA), by the convention."""
    return _TORCH_DTYPES[base_dtype(method=method, precision=precision.used)]


def upcast_trained_to_fp32(model: Any) -> int:
    """Under autocast every trained weight is an fp32 master (peft leaves `modules_to_save`
    copies in the base dtype, and GradScaler refuses fp16 gradients); return tensors cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def freeze_4bit_base(model: Any) -> Any:
    """Make a 4-bit base ready for LoRA: freeze it, upcast nothing (see conventions).

    peft's `prepare_model_for_kbit_training` would also cast embeddings, norms and lm_head to
    fp32, which roughly doubles activation memory; the estimator models this choice instead.
    """
    model.requires_grad_(False)
    return model


def keep_4bit_training_layout(model: Any) -> int:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel; return layers set.

    bitsandbytes' `Linear4bit.forward` (bitsandbytes/nn/modules.py, 0.49 and later), on a CPU with
    AVX512-BF16 and when the layer is in eval mode with an input that needs no grad (our eval
    pass), rewrites its weight in place into a CPU-only layout
    (`functional._convert_weight_packed_for_cpu`): the bytes then differ from what the estimator
    counts, every output dimension must divide by 32 and every input dimension reach the 64-wide
    quantization block (else `shape '[N, 0]' is invalid`), and training the same layers again
    breaks. The layer reads the switch `support_avx512bf16_for_cpu`, set once from
    `has_avx512bf16()` in `__init__`; turning it off keeps the training layout on every CPU.
    """
    layers = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            layers += 1
    return layers


def _dtype_kwarg() -> str:
    import transformers
    from packaging.version import Version

    # `dtype` replaced `torch_dtype` in transformers 4.56; older releases only know the latter.
    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _bnb_config(spec: JobSpec, precision: PrecisionPlan) -> Any:
    from transformers import BitsAndBytesConfig

    compute = precision.autocast_dtype or precision.load_dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.qlora.quant_type,
        bnb_4bit_use_double_quant=spec.qlora.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def _enable_checkpointing(model: Any) -> None:
    # Non-reentrant checkpointing needs no enable_input_require_grads under frozen inputs (LoRA).
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _make_trainable(model: Any, spec: JobSpec, precision: PrecisionPlan) -> Any:
    if spec.method is Method.QLORA:
        model = freeze_4bit_base(model)
    if spec.training.checkpointing:
        _enable_checkpointing(model)
    if spec.method is Method.FULL:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    return _add_lora(model, spec, precision)


def adapter_torch_dtype(spec: JobSpec, precision: PrecisionPlan) -> torch.dtype:
    """dtype of LoRA's A and B: fp32 (peft's default), or bf16 where the spec asks for it and
    the run trains in bf16_true (the estimator counts by the same rule)."""
    name = adapter_dtype(precision=precision.used, adapters_fp32=spec.training.adapters_fp32)
    return _TORCH_DTYPES[name]


def set_adapter_dtype(model: Any, dtype: torch.dtype) -> int:
    """Store every LoRA A and B matrix in `dtype` (as the QLoRA paper's code casts its LoRA
    layers to bf16); return the tensors cast."""
    cast = 0
    for name, param in model.named_parameters():
        if ".lora_" in name and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast


def _add_lora(model: Any, spec: JobSpec, precision: PrecisionPlan) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = spec.lora
    # the same resolution as the estimate's (`auto`: peft's default for the model type)
    targets = resolve_lora_targets(
        model_type=model.config.model_type, requested=lora.target_modules
    )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # annotated int; scaling = alpha / r
        lora_dropout=lora.dropout,
        target_modules=targets.for_config(),
        modules_to_save=list(lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    dtype = adapter_torch_dtype(spec, precision)
    try:
        # peft upcasts 16-bit adapters to fp32 by default; bf16 adapters are asked for explicitly
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=dtype == torch.float32)
    except ValueError as exc:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)})
        raise JobSpecError(
            f"LoRA cannot be applied: {exc}. Linear module names in this model: {linear}"
        ) from exc
    set_adapter_dtype(peft_model, dtype)
    return peft_model


def _is_linear(module: Any) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Linear4bit"
