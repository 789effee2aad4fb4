"""Real CPU LoRA jobs with default targets adapt what the estimate said (GPT-2, Phi-3), and an
encoder-decoder model is refused before loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.estimator.lora import lora_targets, lora_trainable_params
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import LoraSpec
from devtools.tinymodel import make_tiny_causal_lm
from worker.training.errors import JobSpecError
from worker.training.job import run_training
from worker.training.spec import Launch

FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256},
    "phi3": {
        "model_type": "phi3",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    },
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_default_targets_of_a_real_job_are_the_estimates(
    family: str, job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    folder = make_tiny_causal_lm(tmp_path / family, config=FAMILIES[family])
    lora = {"r": 4, "alpha": 8}  # no target_modules: "auto"
    raw = {**job_spec, "model": {"path": str(folder)}, "lora": lora, "eval_fraction": 0.0}
    actuals = run_training(
        launch(raw),
        out_dir=tmp_path / "out",
        on_progress=lambda event: None,
        stop_requested=lambda: False,
    )
    assert actuals.stop_reason == "completed" and actuals.steps == job_spec["max_steps"]

    analysis = analyze_model(json.loads((folder / "config.json").read_text()))
    spec = LoraSpec(**lora)
    estimated = {name for name, _, _ in lora_targets(analysis, spec)}
    # peft saves the names it was given, all-linear written out as full module names
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())["target_modules"]
    trained = {
        name
        for name, _, _ in analysis.linear_layers
        if any(name == t or name.endswith("." + t) for t in saved)
    }
    assert trained == estimated and estimated
    assert actuals.trainable_params == lora_trainable_params(analysis, spec)


def test_encoder_decoder_model_is_refused_before_loading(
    job_spec: dict[str, Any], launch: Callable[..., Launch], tmp_path: Path
) -> None:
    from transformers import T5Config

    T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2).save_pretrained(tmp_path / "t5")
    raw = {**job_spec, "model": {"path": str(tmp_path / "t5")}}
    with pytest.raises(JobSpecError, match=r"encoder-decoder.*AutoModelForCausalLM"):
        run_training(
            launch(raw),
            out_dir=tmp_path / "out",
            on_progress=lambda event: None,
            stop_requested=lambda: False,
        )
