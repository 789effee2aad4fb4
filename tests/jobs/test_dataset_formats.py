"""Real CPU jobs on a ShareGPT and a Parquet upload; for chat data rendered by the model's own
chat template, the estimate's loss-token count equals what the worker trains on."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from devtools.tinymodel import corpus_sentences, make_tiny_model
from tests.conftest import auth
from tests.jobs.jobs_support import submit, wait_status
from tests.support import ServiceEnv, WorkerProcess

CHAT_MODEL = "tiny-chat-template"
SEQ_LEN = 48  # short enough that some conversations are cut and a few lose every reply token


def _sharegpt(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    words = corpus_sentences()
    rows = []
    for i in range(n):
        turns = [
            {"from": "human", "value": rng.choice(words)},
            {"from": "gpt", "value": rng.choice(words)},
        ]
        if i % 3 == 0:  # some multi-turn: only the last reply is learned
            turns += [{"from": "human", "value": "Again?"}, {"from": "gpt", "value": "Yes."}]
        row: dict[str, Any] = {"conversations": turns}
        if i % 2 == 0:
            row["system"] = "Be brief."
        rows.append(row)
    return rows


def _upload(client: Any, key: str, name: str, payload: bytes) -> dict[str, Any]:
    resp = client.post(
        "/v1/datasets",
        files={"file": (name, io.BytesIO(payload), "application/octet-stream")},
        data={"model_path": CHAT_MODEL},
        headers=auth(key),
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_sharegpt_and_parquet_train_and_loss_tokens_match_the_estimate(
    app_client: Any, keys: dict[str, str], cpu_worker: WorkerProcess, service_env: ServiceEnv
) -> None:
    model = service_env.model_root / CHAT_MODEL
    if not (model / "config.json").exists():
        make_tiny_model(model, vocab_size=384, hidden_size=64, layers=2, chat_template=True)
    rows = _sharegpt(60, seed=4)
    jsonl = _upload(
        app_client,
        keys["submit"],
        "chat.jsonl",
        "".join(json.dumps(r) + "\n" for r in rows).encode(),
    )
    assert jsonl["format"] == "sharegpt" and jsonl["chat_template"] == {
        "model_template": 60,
        "plain": 0,
    }
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_sharegpt(40, seed=5)), sink)
    parquet = _upload(app_client, keys["submit"], "chat.parquet", sink.getvalue())
    assert parquet["container"] == "parquet" and parquet["num_examples"] == 40

    jobs = []
    for ds in (jsonl, parquet):
        est = app_client.post(
            "/v1/estimates",
            json={
                "model": {"path": CHAT_MODEL},
                "dataset": {"dataset_id": ds["id"]},
                "training": {"seq_len": SEQ_LEN, "micro_batch_size": 4, "precision": "fp32"},
                "hardware": {"gpu": "cpu", "provider": "aws"},
                "methods": ["lora"],
            },
            headers=auth(keys["submit"]),
        )
        assert est.status_code == 201, est.text
        check = est.json()["dataset_check"]
        assert check["tokenizer"] == CHAT_MODEL and check["approximate"] is False
        job = submit(
            app_client,
            keys,
            {"estimate_id": est.json()["id"], "method": "lora", "max_steps": 2},
        )
        jobs.append((job, check))

    for job, check in jobs:
        done = wait_status(app_client, keys, job["id"])
        assert done["status"] == "succeeded", done["error"]
        data = done["actuals"]["data"]
        # The same rows, the same template, the same tokens and masks: the same count.
        assert data["loss_tokens"] == check["loss_tokens"] > 0
        assert data["dropped_no_loss_tokens"] == check["dropped_no_loss_tokens"]
        assert data["chat_template"]["plain"] == 0 and data["format"] == "sharegpt"
