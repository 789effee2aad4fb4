"""Finding 3: a pasted config is bounded by the model it would build, whatever its keys are
called (MPT's n_layers, BART's encoder/decoder layers), refused fast with the field named, while
another team's estimates are still served — on a real uvicorn server, its memory measured."""

from __future__ import annotations

import threading
import time
from typing import Any

from app.estimator.build_budget import MAX_MODULES
from tests.live_api import LiveApi

MB = 1024 * 1024
RSS_BUDGET = 50 * MB
REFUSED_WITHIN_S = 10.0  # liveness on a shared machine; the attacks took 42 s and > 60 s
ESTIMATE = {
    "dataset": {"num_examples": 1000, "avg_tokens": 200, "max_tokens": 512},
    "methods": ["lora"],
    "hardware": {"gpu": "A100-40GB"},
}
BART = {  # 1,500 + 1,500 layers: answered 201 after 42 s
    "model_type": "bart",
    "encoder_layers": 1500,
    "decoder_layers": 1500,
    "d_model": 1024,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "vocab_size": 50265,
}
MPT = {"model_type": "mpt", "n_layers": 100_000, "d_model": 2048, "n_heads": 16}  # > 60 s, +3 GB
DECODER_ONLY = BART | {"encoder_layers": 2}  # the decoder stack alone past the budget
# A sub-config's layers: transformers' config alone would spend minutes filling `layer_types`.
NESTED = {
    "model_type": "gemma3",
    "text_config": {"model_type": "gemma3_text", "num_hidden_layers": 10**7},
}
ATTACKS: dict[str, dict[str, Any]] = {
    "bart": BART,
    "mpt": MPT,
    "decoder": DECODER_ONLY,
    "nested": NESTED,
}


def _estimate(live_api: LiveApi, secret: str, model: Any) -> tuple[Any, float]:
    start = time.monotonic()
    with live_api.client(secret) as client:
        r = client.post("/v1/estimates", json={**ESTIMATE, "model": model})
    return r, time.monotonic() - start


def test_configs_past_the_build_budget_are_refused_fast_and_others_are_served(
    live_api: LiveApi, teams: dict[str, dict[str, str]]
) -> None:
    attacker, other = teams["alpha"]["read"], teams["beta"]["read"]
    ok, _ = _estimate(live_api, other, "meta-llama/Llama-3.2-1B")  # torch loaded, caches warm
    assert ok.status_code == 201, ok.text
    _estimate(live_api, attacker, {"config": BART})
    before = live_api.rss_bytes()

    served: list[int] = []

    def other_team() -> None:
        for _ in range(4):
            r, _ = _estimate(live_api, other, "meta-llama/Llama-3.1-8B")
            served.append(r.status_code)

    beside = threading.Thread(target=other_team)
    beside.start()
    timings = {}
    for name, config in ATTACKS.items():
        r, seconds = _estimate(live_api, attacker, {"config": config})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["errors"][0]["loc"] == ["model", "config"], problem
        assert "modules" in problem["detail"] and str(MAX_MODULES) in problem["detail"]
        assert problem["model_type"] == config["model_type"]
        assert seconds < REFUSED_WITHIN_S, (name, seconds)
        timings[name] = round(seconds, 2)
    beside.join()
    grown = live_api.rss_bytes() - before
    print(f"refused in {timings} s; RSS growth {grown / MB:.1f} MB; other team: {served}")
    assert served == [201] * 4
    assert grown < RSS_BUDGET


def test_a_large_real_model_still_fits_the_budget(
    live_api: LiveApi, teams: dict[str, dict[str, str]]
) -> None:
    r, _ = _estimate(live_api, teams["beta"]["read"], "meta-llama/Llama-3.1-405B")
    assert r.status_code == 201, r.text
