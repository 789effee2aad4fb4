"""The build budget: a config is judged by the model it builds, whatever its keys are called."""

from __future__ import annotations

import pytest

from app.estimator.build_budget import MAX_MODULES, ModelTooLarge, budgeted, check_layer_count
from app.estimator.inventory import numel
from app.estimator.model_analysis import analyze_model, build_meta_model
from tests.estimator.realmodel import TINY


def test_the_size_of_an_expanded_stack_is_known_before_expanding_it() -> None:
    stack = analyze_model(TINY["llama"]).stack
    assert stack is not None
    for depth in (1, 7, 300):
        expanded = stack.expand(depth)
        assert stack.size_at(depth) == (len(expanded.modules), numel(expanded.params))


@pytest.mark.parametrize(
    ("model_type", "config", "key"),
    [
        ("mpt", {"n_layers": MAX_MODULES + 1}, "n_layers"),  # transformers' attribute_map
        ("gpt2", {"n_layer": MAX_MODULES + 1}, "n_layer"),
        ("bart", {"encoder_layers": MAX_MODULES + 1}, "encoder_layers"),
        ("gemma3", {"text_config": {"num_hidden_layers": MAX_MODULES + 1}}, "num_hidden_layers"),
        (
            "llava",
            {"text_config": {"model_type": "qwen2", "num_hidden_layers": 10**9}},
            "num_hidden_layers",
        ),
    ],
)
def test_a_layer_count_past_the_budget_is_refused_before_the_config_is_made(
    model_type: str, config: dict[str, object], key: str
) -> None:
    with pytest.raises(ModelTooLarge) as err:
        check_layer_count(model_type, config)
    assert key in err.value.detail and err.value.model_type == model_type


def test_a_build_stops_at_the_budget_and_only_inside_it() -> None:
    wide_bart = {
        "model_type": "bart",
        "encoder_layers": 2,
        "decoder_layers": MAX_MODULES // 8,  # no layer count alone passes the budget
        "d_model": 16,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "vocab_size": 64,
    }
    with pytest.raises(ModelTooLarge) as err:
        analyze_model(wide_bart)
    assert f"more than {MAX_MODULES} modules" in err.value.detail
    # The hooks count only the thread's build in progress: a budget left behind counts nothing.
    with budgeted("llama"):
        small = build_meta_model(TINY["llama"])
    assert sum(1 for _ in small.modules()) < MAX_MODULES
    assert analyze_model(wide_bart | {"decoder_layers": 8}).total_params > 0
    with pytest.raises(ModelTooLarge, match="elements"):
        analyze_model(TINY["llama"] | {"vocab_size": 10**13})
