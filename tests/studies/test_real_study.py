"""A real study through the API and a real worker, on two datasets made for it.

Both datasets are made of single tokens of the tiny model's vocabulary. In the first ("mapping")
a random letter (the key) is always followed by its word under an arbitrary table of 16 letters
onto 16 words: a rank-1 adapter, which moves the output logits along one direction only, cannot
learn 16 different answers to 16 keys, while full fine-tuning learns the table. In the second
("unigram") every token is one of 4 words at random: a rank-1 adapter on the output layer is a
learned bias over the vocabulary, which is all this dataset needs.

A study of the two candidates on 10%, 20%, 40% and 80% of each dataset (four sizes: with more
pilots than the law has parameters, its misfit enters the interval) must recommend full
fine-tuning on the first, with the evidence in its reasons, and LoRA on the second; estimates on
each dataset must cite the study; then the recommended candidate runs on the whole data, and the
eval loss it measures must lie in the study's 80% interval of its predicted full-data loss.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from tests.conftest import START_ENV, auth, key_per_scope
from tests.jobs.conftest import TINY_NAME, tiny_model  # noqa: F401 (fixture)
from tests.jobs.jobs_support import JOB_TIMEOUT_S, upload_dataset, wait_status
from tests.support import ServiceEnv, WorkerProcess, start_worker, wait_for

pytestmark = pytest.mark.slow

# 16 letters and 16 words, each one token of the tiny model's tokenizer (checked below).
KEYS = [f" {c}" for c in "bcdefghlmnoprstw"]
VALUES = [" and", " any", " are", " at", " be", " for", " in", " is", " it", " of", " on"]
VALUES += [" the", " their", " to", " water", " with"]
PAIRS = 30  # key-value pairs per example: 61 tokens with BOS, under seq_len 64
EXAMPLES = 400
TRAINING = {
    "seq_len": 64,
    "micro_batch_size": 4,
    "precision": "fp32",
    "optimizer": "adamw",
    "epochs": 4,
}
CANDIDATES = [
    # rank 1 on attention and on the output layer: a bias over the vocabulary, and no more
    {
        "method": "lora",
        "lora": {
            "r": 1,
            "alpha": 2,
            "dropout": 0,
            "target_modules": ["q_proj", "v_proj", "lm_head"],
        },
        "learning_rate": 2e-2,
    },
    {"method": "full", "learning_rate": 3e-3},
]
# The share below the base model's eval loss the fine-tune must reach. The base model predicts
# ~ln(384) = 5.95 nats per token (a target of 2.4); the mapping's floor is ln(16)/2 ~ 1.39 (keys
# random, values determined), out of a rank-1 adapter's reach; the unigram's is ln(4) ~ 1.39 for
# either method.
TARGET = {"relative_improvement": 0.6}


def _dataset(dest: Path, *, mapped: bool, seed: int) -> Path:
    rng = random.Random(seed)
    table = dict(zip(KEYS, rng.sample(VALUES, len(VALUES)), strict=True))
    lines = []
    for _ in range(EXAMPLES):
        keys = [rng.choice(KEYS) for _ in range(PAIRS)]
        if mapped:
            text = "".join(k + table[k] for k in keys)
        else:
            text = "".join(rng.choice(VALUES[:4]) for _ in range(2 * PAIRS))
        lines.append(json.dumps({"text": text.lstrip()}) + "\n")
    dest.write_text("".join(lines))
    return dest


@pytest.fixture(scope="module")
def study_worker(
    isolated_services: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A CPU worker on a database and a broker of this module's own: the pilots and full-data
    runs train as they do when this module runs alone, whatever other tests ran, queued or
    calibrated before it."""
    log = tmp_path_factory.mktemp("study") / "worker.log"
    name = f"study-{uuid.uuid4().hex[:6]}"
    with start_worker(isolated_services, gpu="cpu", hostname=name, log=log) as worker:
        yield worker


@pytest.fixture(scope="module")
def keys(isolated_services: ServiceEnv) -> dict[str, str]:
    return key_per_scope("study")


def _check_tokens(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    for piece in KEYS + VALUES:
        assert len(tok.encode(piece, add_special_tokens=False)) == 1, piece


def _study(client: Any, keys: dict[str, str], dataset_id: str) -> dict[str, Any]:
    body = {
        "model": {"path": TINY_NAME},
        "dataset_id": dataset_id,
        "candidates": CANDIDATES,
        "fractions": [0.1, 0.2, 0.4, 0.8],
        "target": TARGET,
        "pilot_budget_usd": 1.0,
        "training": TRAINING,
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "eval_fraction": 0.1,
    }
    resp = client.post("/v1/studies", json=body, headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _finished(client: Any, keys: dict[str, str], study_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        got = dict(client.get(f"/v1/studies/{study_id}", headers=auth(keys["read"])).json())
        return got if got["status"] != "running" else None

    return dict(wait_for(done, timeout=JOB_TIMEOUT_S * 3, interval=1.0, what=f"study {study_id}"))


def _run_full(client: Any, keys: dict[str, str], study_id: str) -> dict[str, Any]:
    resp = client.post(f"/v1/studies/{study_id}/run", headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    return wait_status(client, keys, resp.json()["id"])


# In the whole suite the pilots trained to other (repeatable) losses than when this module runs
# alone: something an earlier test leaves in the test process changes what the study trains, and
# with it the verdict (LoRA and full cost almost the same here). Until that is found, the study
# runs in a pytest session of its own, started from the suite's starting environment.
FRESH = "TUNECOST_TEST_STUDY_SESSION"
FRESH_TIMEOUT_S = 1800


if os.environ.get(FRESH) != "1":

    def test_a_study_in_a_session_of_its_own() -> None:
        cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__]
        env = {**START_ENV, FRESH: "1"}
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            cmd,
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=FRESH_TIMEOUT_S,
            check=False,
        )
        print(done.stdout[-6000:])
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "1 passed" in done.stdout, done.stdout[-3000:]


def _study_test(
    study_worker: WorkerProcess,
    app_client: Any,
    keys: dict[str, str],
    tiny_model: Path,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    _check_tokens(tiny_model)
    datasets = {
        name: upload_dataset(
            app_client,
            keys["submit"],
            _dataset(tmp_path / f"{name}.jsonl", mapped=name == "mapping", seed=1),
            model_path=TINY_NAME,
        )
        for name in ("mapping", "unigram")
    }
    started = {name: _study(app_client, keys, ds)["id"] for name, ds in datasets.items()}
    studies = {name: _finished(app_client, keys, sid) for name, sid in started.items()}
    for name, study in studies.items():
        assert study["status"] == "succeeded", study
        assert study["progress"] == {"pilots": 8, "ended": 8, "succeeded": 8, "running": 0}
        assert study["pilot_cost_usd"] > 0
        for cand in study["candidates"]:
            losses = [p["eval_loss"] for p in cand["pilots"]]
            assert all(x is not None for x in losses), cand
            pred = cand["predicted_eval_loss"]
            assert pred["low"] <= pred["value"] <= pred["high"]
            assert cand["predicted_cost_usd"]["value"] > 0
            print(name, cand["name"], [round(x, 4) for x in losses], "->", pred)

    mapping, unigram = studies["mapping"], studies["unigram"]
    assert mapping["recommendation"]["method"] == "full", mapping["recommendation"]
    lora = mapping["candidates"][0]
    assert lora["prob_above_target"] >= 0.8
    assert "LoRA tried and not enough" in mapping["recommendation"]["reasons"][0]
    assert f"{lora['predicted_eval_loss']['value']:.3f}" in mapping["recommendation"]["reasons"][0]
    assert unigram["recommendation"]["method"] == "lora", unigram["recommendation"]

    _estimates_cite_the_evidence(app_client, keys, datasets, studies)

    for name, study in studies.items():
        job = _run_full(app_client, keys, study["id"])
        assert job["status"] == "succeeded", job
        chosen = study["candidates"][study["recommendation"]["candidate"]]
        pred = chosen["predicted_eval_loss"]
        print(name, "predicted", pred, "measured", job["eval_loss"])
        assert job["actuals"]["eval_set_id"] == study["eval_set_id"]
        assert pred["low"] <= job["eval_loss"] <= pred["high"], (name, pred, job["eval_loss"])


def _estimates_cite_the_evidence(
    client: Any, keys: dict[str, str], datasets: dict[str, str], studies: dict[str, Any]
) -> None:
    """POST /v1/estimates on each dataset: the study's numbers in the reasons, and its verdict
    on full fine-tuning in place of the flags (a high domain shift is stated for both)."""
    for name, dataset_id in datasets.items():
        body = {
            "model": {"path": TINY_NAME},
            "dataset": {"dataset_id": dataset_id},
            "methods": ["full", "lora"],
            "training": TRAINING,
            "hardware": {"gpu": "cpu", "provider": "aws"},
            "domain_shift": "high",
        }
        resp = client.post("/v1/estimates", json=body, headers=auth(keys["read"]))
        assert resp.status_code == 201, resp.text
        rec = resp.json()["recommendation"]
        text = " ".join(rec["reasons"])
        study = studies[name]
        assert f"study {study['id']} on this dataset" in text, rec
        for cand in study["candidates"]:
            assert f"{cand['name']} reaches {cand['predicted_eval_loss']['value']:.3g}" in text
        assert "in place of the domain_shift" in text
        assert rec["method"] == ("full" if name == "mapping" else "lora"), rec


if os.environ.get(FRESH) == "1":
    test_a_study_recommends_full_fine_tuning_only_where_an_adapter_cannot_fit = _study_test
