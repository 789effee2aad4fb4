"""POST/GET /v1/estimates over real HTTP handling, PostgreSQL and the real estimator."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.catalog import load_catalog
from app.db import session_scope
from app.models import CatalogVersion, Estimate
from devtools.tinymodel import make_tiny_model
from tests.conftest import auth
from tests.support import ServiceEnv

LLAMA2 = "meta-llama/Llama-2-7b-hf"
# Issue 4's done-when request: Llama-2-7B LoRA r=8 on q,v, micro-batch 1, seq 1304, bf16, A100-40GB.
DONE_WHEN = {
    "model": LLAMA2,
    "dataset": {"num_examples": 50000, "avg_tokens": 150, "max_tokens": 1304},
    "methods": ["lora"],
    "training": {"micro_batch_size": 1, "seq_len": 1304, "precision": "bf16_true"},
    "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    "hardware": {"gpu": "A100-40GB", "num_gpus": 1},
}
BREAKDOWN = {"weights", "gradients", "optimizer_states", "activations", "logits", "overhead"}


def _post(client: TestClient, secret: str, body: dict[str, Any]) -> httpx2.Response:
    return client.post("/v1/estimates", json=body, headers=auth(secret))


def _newest_version() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.max(CatalogVersion.id))) or 0)


def test_done_when_llama2_lora_on_a100_40gb(app_client: TestClient, keys: dict[str, str]) -> None:
    r = _post(app_client, keys["read"], DONE_WHEN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("est_") and body["catalog_version"] == _newest_version()
    assert body["model"]["architecture"] == "LlamaForCausalLM"
    assert body["model"]["total_params"] == 6_738_415_616  # Llama-2-7b-hf, as transformers counts
    lora = body["results"]["lora"]
    # peft prints "trainable params: 4,194,304" for r=8 on q_proj, v_proj of Llama-2-7B.
    assert lora["trainable_params"] == 32 * 2 * 8 * (4096 + 4096)
    memory = lora["memory"]
    assert memory["breakdown"].keys() >= BREAKDOWN
    assert all(memory["breakdown"][k] >= 0 for k in BREAKDOWN)
    assert memory["breakdown"]["weights"] >= 2 * 6_738_415_616  # bf16 base weights
    assert memory["low_bytes"] <= memory["per_gpu_bytes"] <= memory["high_bytes"]
    assert (lora["gpu"], lora["num_gpus"], lora["fits"]) == ("A100-40GB", 1, True)
    assert lora["hours"] > 0 and lora["flops"] > 0 and 0 < lora["mfu"] < 1
    assert lora["basis"] == "prior"
    listed = {r.usd_per_gpu_hour for r in load_catalog().prices_for("A100-40GB")}
    assert lora["price_per_gpu_hour"] in listed
    assert lora["cost_usd"] == pytest.approx(lora["gpu_hours"] * lora["price_per_gpu_hour"])
    assert lora["cost_usd"] > 0 and lora["artifact_bytes"] > 0
    assert body["dataset"]["tokens_per_epoch"] == pytest.approx(50000 * 150)
    assert body["dataset"]["processed_tokens"] >= body["dataset"]["tokens_per_epoch"]
    assert body["plans"]["lora"] and body["recommendation"]["method"] == "lora"

    got = app_client.get(f"/v1/estimates/{body['id']}", headers=auth(keys["read"]))
    assert got.status_code == 200 and got.json() == body
    with session_scope() as session:
        row = session.get(Estimate, body["id"])
        assert row is not None and row.catalog_version == body["catalog_version"]
        assert row.model_ref == LLAMA2 and row.request["model"] == LLAMA2


def test_estimates_need_a_key_and_unknown_ids_are_404(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    assert app_client.post("/v1/estimates", json=DONE_WHEN).status_code == 401
    r = app_client.get("/v1/estimates/est_nope", headers=auth(keys["read"]))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem")


def test_price_override_changes_the_next_estimate_not_the_stored_one(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    body = DONE_WHEN | {"hardware": {"gpu": "A100-40GB", "num_gpus": 1, "provider": "aws"}}
    before = _post(app_client, keys["read"], body).json()
    old = before["results"]["lora"]
    admin = auth(keys["admin"])
    new_price = round(old["price_per_gpu_hour"] / 2, 4)
    put = app_client.put(
        "/v1/catalog/prices/aws/A100-40GB",
        json={"usd_per_gpu_hour": new_price, "pricing": "on_demand"},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    try:
        after = _post(app_client, keys["read"], body).json()
        new = after["results"]["lora"]
        assert after["catalog_version"] == put.json()["catalog_version"] > before["catalog_version"]
        assert new["price_per_gpu_hour"] == new_price
        assert new["gpu_hours"] == pytest.approx(old["gpu_hours"])
        assert new["cost_usd"] == pytest.approx(old["cost_usd"] / 2, rel=1e-3)
        # The stored estimate keeps the price and version it was made with.
        kept = app_client.get(f"/v1/estimates/{before['id']}", headers=auth(keys["read"])).json()
        assert kept["catalog_version"] == before["catalog_version"]
        assert kept["results"]["lora"]["cost_usd"] == old["cost_usd"]
    finally:
        app_client.delete("/v1/catalog/prices/aws/A100-40GB", headers=admin)
    restored = _post(app_client, keys["read"], body).json()
    assert restored["results"]["lora"]["cost_usd"] == pytest.approx(old["cost_usd"])
    assert restored["catalog_version"] > after["catalog_version"]


def test_cursor_pagination_walks_every_estimate_once(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    read = auth(keys["read"])
    made = [
        _post(app_client, keys["read"], DONE_WHEN | {"variants": v}).json()["id"] for v in (2, 3, 4)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = app_client.get("/v1/estimates", params=params, headers=read)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen[:3] == made[::-1]
    with session_scope() as session:
        assert (
            len(seen)
            == len(set(seen))
            # The list is the tenant's (the read key's team): other tenants' rows are not in it.
            == session.scalar(
                select(func.count()).select_from(Estimate).where(Estimate.team == "ml")
            )
        )
    bad = app_client.get("/v1/estimates", params={"cursor": "eyJub3Bl"}, headers=read)
    assert bad.status_code == 422


def test_an_uploaded_dataset_drives_the_estimate(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    lines = [json.dumps({"text": "word " * (20 + 10 * i)}) for i in range(30)]
    files = {"file": ("d.jsonl", io.BytesIO("\n".join(lines).encode()), "application/jsonl")}
    ds = app_client.post("/v1/datasets", files=files, headers=auth(keys["submit"])).json()
    body = DONE_WHEN | {"dataset": {"dataset_id": ds["id"]}, "training": {"seq_len": 512}}
    r = _post(app_client, keys["read"], body)
    assert r.status_code == 201, r.text
    est = r.json()
    assert est["dataset_id"] == ds["id"]
    assert est["dataset"]["tokens_per_epoch"] == pytest.approx(ds["total_tokens"])
    assert est["dataset"]["num_sequences"] == ds["num_examples"] == 30
    missing = _post(app_client, keys["read"], DONE_WHEN | {"dataset": {"dataset_id": "ds_nope"}})
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"] == [
        "dataset",
        "dataset_id",
    ]


def test_a_local_model_folder_under_the_roots(
    app_client: TestClient, keys: dict[str, str], service_env: ServiceEnv
) -> None:
    make_tiny_model(service_env.model_root / "tiny-est", hidden_size=32, heads=4, kv_heads=2)
    body = DONE_WHEN | {"model": {"path": "tiny-est"}, "hardware": {"gpu": "A100-40GB"}}
    r = _post(app_client, keys["read"], body)
    assert r.status_code == 201, r.text
    assert r.json()["model_ref"] == "path:tiny-est"
    assert r.json()["model"]["hidden_size"] == 32
    outside = _post(app_client, keys["read"], body | {"model": {"path": "../../etc"}})
    assert outside.status_code == 403
