"""GET /v1/catalog/* and admin price overrides over real HTTP handling and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx2
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.catalog import load_catalog
from app.catalog.model_catalog import catalog_model_ids, get_model_config
from app.db import session_scope
from app.models import CatalogVersion, PriceOverride
from tests.conftest import auth

PROBLEM = "application/problem+json"


def _problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    result: dict[str, Any] = response.json()
    return result


def _newest_version() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.max(CatalogVersion.id))) or 0)


def test_gpus_are_the_catalog_files(app_client: TestClient, keys: dict[str, str]) -> None:
    _problem(app_client.get("/v1/catalog/gpus"), 401)
    body = app_client.get("/v1/catalog/gpus", headers=auth(keys["read"])).json()
    files = load_catalog().gpus
    assert {g["id"] for g in body["gpus"]} == set(files)
    a100 = next(g for g in body["gpus"] if g["id"] == "A100-40GB")
    assert a100["memory_gib"] == files["A100-40GB"].memory_gib
    assert body["aliases"]["H100"] in files
    assert body["catalog_version"] == _newest_version()


def test_models_list_every_catalog_config(app_client: TestClient, keys: dict[str, str]) -> None:
    read = auth(keys["read"])
    models = app_client.get("/v1/catalog/models", headers=read).json()["models"]
    assert [m["id"] for m in models] == catalog_model_ids()
    llama = next(m for m in models if m["id"] == "meta-llama/Llama-2-7b-hf")
    config = get_model_config("meta-llama/Llama-2-7b-hf")
    assert (llama["model_type"], llama["hidden_size"], llama["num_layers"]) == (
        "llama",
        config["hidden_size"],
        config["num_hidden_layers"],
    )
    assert "total_params" not in llama  # the list builds no model


def test_model_detail_counts_parameters_exactly(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    read = auth(keys["read"])
    r = app_client.get("/v1/catalog/models/meta-llama/Llama-2-7b-hf", headers=read)
    assert r.status_code == 200, r.text
    detail = r.json()
    # 32 layers x (4 x 4096^2 attention + 3 x 4096 x 11008 MLP + 2 x 4096 norms)
    # + 2 x 32000 x 4096 (embeddings, untied head) + 4096 final norm.
    layer = 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
    assert detail["total_params"] == 32 * layer + 2 * 32000 * 4096 + 4096 == 6_738_415_616
    assert detail["active_params"] == detail["total_params"]
    assert sum(detail["params_by_kind"].values()) == detail["total_params"]
    assert {"q_proj", "v_proj", "down_proj"} <= set(detail["lora_target_names"])
    mixtral = app_client.get("/v1/catalog/models/mistralai/Mixtral-8x7B-v0.1", headers=read).json()
    assert mixtral["active_params"] < mixtral["total_params"]
    missing = app_client.get("/v1/catalog/models/meta-llama/Llama-2-7b", headers=read)
    assert missing.status_code == 404
    assert "meta-llama/Llama-2-7b-hf" in missing.json()["close_matches"]


def test_prices_filter_by_gpu_alias_and_reject_unknown_gpus(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    read = auth(keys["read"])
    body = app_client.get("/v1/catalog/prices", params={"gpu": "H100"}, headers=read).json()
    assert body["prices"] and {p["gpu"] for p in body["prices"]} == {"H100-80GB-SXM"}
    listed = [r for r in load_catalog().prices if r.gpu == "H100-80GB-SXM" and r.provider == "aws"]
    aws = [p for p in body["prices"] if p["provider"] == "aws"]
    assert sorted(p["usd_per_gpu_hour"] for p in aws) == sorted(r.usd_per_gpu_hour for r in listed)
    problem = _problem(
        app_client.get("/v1/catalog/prices", params={"gpu": "H1000"}, headers=read), 422
    )
    assert "A100-40GB" in problem["detail"] and "A100-40GB" in problem["valid"]
    _problem(app_client.get("/v1/catalog/prices", params={"pricing": "free"}, headers=read), 422)


def test_price_override_needs_admin_and_advances_the_version(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    url = "/v1/catalog/prices/testcloud/A100-80GB"
    body = {"usd_per_gpu_hour": 1.23, "pricing": "spot"}
    _problem(app_client.put(url, json=body, headers=auth(keys["read"])), 403)
    _problem(app_client.put(url, json=body, headers=auth(keys["submit"])), 403)
    _problem(app_client.put(url, json=body), 401)
    before = _newest_version()

    admin = auth(keys["admin"])
    r = app_client.put(url, json=body, headers=admin)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["catalog_version"] == _newest_version() > before
    assert first["price"] == first["price"] | {
        "provider": "testcloud",
        "gpu": "A100-80GB",
        "pricing": "spot",
        "usd_per_gpu_hour": 1.23,
        "override": True,
    }
    listed = app_client.get(
        "/v1/catalog/prices", params={"provider": "testcloud"}, headers=auth(keys["read"])
    ).json()
    assert listed["catalog_version"] == first["catalog_version"]
    assert [(p["gpu"], p["usd_per_gpu_hour"]) for p in listed["prices"]] == [("A100-80GB", 1.23)]

    # Setting it again updates the one override row and advances the version again.
    second = app_client.put(url, json=body | {"usd_per_gpu_hour": 2.5}, headers=admin).json()
    assert second["catalog_version"] == first["catalog_version"] + 1
    with session_scope() as session:
        rows = session.scalars(
            select(PriceOverride).where(PriceOverride.provider == "testcloud")
        ).all()
        assert [(r.gpu, r.pricing, r.usd_per_gpu_hour) for r in rows] == [
            ("A100-80GB", "spot", 2.5)
        ]

    # An alias resolves to the catalog id; unknown GPUs and nonsense prices are 422.
    r = app_client.put("/v1/catalog/prices/testcloud/H100", json=body, headers=admin)
    assert r.json()["price"]["gpu"] == "H100-80GB-SXM"
    problem = _problem(app_client.put("/v1/catalog/prices/aws/B300", json=body, headers=admin), 422)
    assert "valid ids" in problem["detail"]
    for bad in ({"usd_per_gpu_hour": -1}, {"usd_per_gpu_hour": 1e9}, {"pricing": "spot"}):
        _problem(app_client.put(url, json=bad, headers=admin), 422)
    _problem(
        app_client.put("/v1/catalog/prices/Bad Cloud!/A100-80GB", json=body, headers=admin), 422
    )

    # Removing it restores the listed state and advances once more.
    cleared = app_client.delete(url, params={"pricing": "spot"}, headers=admin)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["catalog_version"] == _newest_version()
    _problem(app_client.delete(url, params={"pricing": "spot"}, headers=admin), 404)
    app_client.delete(
        "/v1/catalog/prices/testcloud/H100", params={"pricing": "spot"}, headers=admin
    )
    left = app_client.get(
        "/v1/catalog/prices", params={"provider": "testcloud"}, headers=auth(keys["read"])
    ).json()
    assert left["prices"] == []
