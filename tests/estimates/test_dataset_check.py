"""An estimate on an uploaded dataset says how many examples its seq_len leaves with no token to
learn from, and which seq_len keeps them, agreeing with what the worker really drops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from app.estimator.workload import expected_longest
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth
from tests.support import ServiceEnv
from worker.training.data import prepare_data

MAX_BYTES = 10_000_000


def _worker_drops(path: Path, folder: Path, seq_len: int) -> int:
    """Examples the worker's own data pipeline drops at `seq_len` (no held-out split)."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    prepared = prepare_data(
        path,
        tokenizer,
        seq_len=seq_len,
        packing=False,
        mask_prompt=True,
        eval_fraction=0.0,
        model_max=4096,
        max_bytes=MAX_BYTES,
    )
    return prepared.stats.dropped_no_loss_tokens


def _estimate(client: TestClient, secret: str, dataset_id: str, seq_len: int) -> dict[str, Any]:
    body = {
        "model": {"path": "tiny-check"},
        "dataset": {"dataset_id": dataset_id},
        "methods": ["lora"],
        "training": {"seq_len": seq_len, "micro_batch_size": 4},
        "hardware": {"gpu": "A100-40GB"},
    }
    r = client.post("/v1/estimates", json=body, headers=auth(secret))
    assert r.status_code == 201, r.text
    body_out: dict[str, Any] = r.json()
    return body_out


def test_estimate_counts_examples_truncation_leaves_without_loss_tokens(
    app_client: TestClient, keys: dict[str, str], service_env: ServiceEnv, tmp_path: Path
) -> None:
    folder = make_tiny_model(
        service_env.model_root / "tiny-check", hidden_size=32, heads=4, kv_heads=2
    )
    path = make_tiny_dataset(tmp_path / "alpaca.jsonl", n=120, fmt="alpaca", seed=7)
    files = {"file": ("alpaca.jsonl", path.read_bytes(), "application/jsonl")}
    up = app_client.post(
        "/v1/datasets", files=files, data={"model_path": "tiny-check"}, headers=auth(keys["submit"])
    )
    assert up.status_code == 201, up.text
    ds = up.json()

    short = 80  # about the median prompt length of this tiny Alpaca set
    est = _estimate(app_client, keys["read"], ds["id"], short)
    check = est["dataset_check"]
    dropped = _worker_drops(path, folder, short)
    assert 0 < dropped < 120  # the case is meaningful: some but not all examples drop out
    assert check["seq_len"] == short and check["examples"] == 120
    assert check["dropped_no_loss_tokens"] == dropped
    note = next(n for n in est["notes"] if "no token to learn from" in n)
    assert f"leaves {dropped} of 120 examples" in note
    assert f"seq_len {check['seq_len_keeping_all']} keeps every example" in note
    stored = app_client.get(f"/v1/estimates/{est['id']}", headers=auth(keys["read"])).json()
    assert stored["dataset_check"] == check and note in stored["notes"]

    # the suggestions are exact: the suggested seq_len keeps all, one token less does not
    keep_all = check["seq_len_keeping_all"]
    assert _worker_drops(path, folder, keep_all) == 0
    assert _worker_drops(path, folder, keep_all - 1) > 0
    most = check["seq_len_keeping_95pct"]
    assert _worker_drops(path, folder, most) <= 0.05 * 120 < _worker_drops(path, folder, most - 1)
    fine = _estimate(app_client, keys["read"], ds["id"], keep_all)
    assert fine["dataset_check"]["dropped_no_loss_tokens"] == 0
    assert not any("no token to learn from" in n for n in fine["notes"])

    # Padding is counted from the upload's own lengths: every example carries the Alpaca
    # template, so only the part above the shortest pads a micro-batch of 4.
    stats = ds["stats"]
    whole = _estimate(app_client, keys["read"], ds["id"], stats["max_tokens"])
    padded = whole["dataset"]["mean_padded_len"]
    mean, shortest = stats["mean_tokens"], stats["min_tokens"]
    assert 0 < shortest < mean
    assert padded == pytest.approx(expected_longest(mean, 4, shortest))
    assert padded < expected_longest(mean, 4)
