"""`tunecost prices refresh --from-file` and POST /v1/catalog/price-imports on real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.catalog import load_catalog
from app.cli.main import cli
from app.db import session_scope
from app.models import CatalogVersion, ImportedPrice, PriceImport
from app.models.base import utcnow
from tests.conftest import auth
from tests.prices.test_importers import BROKEN, FILES, SAMPLES, broken, sample


def _counts() -> tuple[int, int, int]:
    with session_scope() as session:
        return (
            int(session.scalar(select(func.max(CatalogVersion.id))) or 0),
            int(session.scalar(select(func.count()).select_from(PriceImport)) or 0),
            int(session.scalar(select(func.count()).select_from(ImportedPrice)) or 0),
        )


def _prices(client: Any, key: str, provider: str) -> list[dict[str, Any]]:
    r = client.get("/v1/catalog/prices", params={"provider": provider}, headers=auth(key))
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["prices"]
    return result


@pytest.mark.parametrize("provider", sorted(FILES))
def test_refresh_from_file_imports_a_new_catalog_version(
    provider: str, app_client: TestClient, iso_keys: dict[str, str]
) -> None:
    before = _counts()
    result = CliRunner().invoke(
        cli, ["prices", "refresh", "--from-file", str(SAMPLES / FILES[provider])]
    )
    assert result.exit_code == 0, result.output
    version, imports, rows = _counts()
    assert version == before[0] + 1 and imports == before[1] + 1
    assert f"catalog version {version}" in result.output
    listed = _prices(app_client, iso_keys["read"], provider)
    imported = [p for p in listed if p["origin"] == "import"]
    assert len(imported) == rows - before[2]
    assert all(p["as_of"] == utcnow().date().isoformat() and not p["stale"] for p in imported)
    assert all(FILES[provider] in p["source"] for p in imported)
    kinds = {p["pricing"] for p in imported}
    # the kinds the import brought replace the seed's; the others (AWS spot) stay
    seed = [r for r in load_catalog().prices if r.provider == provider]
    kept = [p for p in listed if p["origin"] == "seed"]
    assert {p["pricing"] for p in kept} == {r.pricing for r in seed} - kinds
    body = app_client.get("/v1/catalog/price-imports", headers=auth(iso_keys["read"])).json()
    newest = body["imports"][0]
    assert (newest["provider"], newest["catalog_version"]) == (provider, version)
    assert newest["source"] == FILES[provider] and newest["imported_by"] == "cli"


@pytest.mark.parametrize(("provider", "how"), BROKEN, ids=[f"{p}-{h.__name__}" for p, h in BROKEN])
def test_refresh_of_a_broken_file_changes_nothing_and_says_why(
    provider: str, how: Any, tmp_path: Path, app_client: TestClient, iso_keys: dict[str, str]
) -> None:
    doc, reason = broken(provider, how)
    path = tmp_path / FILES[provider]
    path.write_text(json.dumps(doc))
    before = _counts()
    prices = _prices(app_client, iso_keys["read"], provider)
    result = CliRunner().invoke(cli, ["prices", "refresh", "--from-file", str(path)])
    assert result.exit_code == 1
    assert "nothing changed" in result.output and reason in result.output.replace("\n", "")
    assert _counts() == before
    assert _prices(app_client, iso_keys["read"], provider) == prices


def test_refresh_of_a_file_that_is_not_json_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text((SAMPLES / FILES["aws"]).read_text()[:500])
    before = _counts()
    result = CliRunner().invoke(cli, ["prices", "refresh", "--from-file", str(path)])
    assert result.exit_code == 1 and "nothing changed" in result.output
    assert _counts() == before


def test_admin_api_imports_and_refuses_partial_documents(
    app_client: TestClient, iso_keys: dict[str, str]
) -> None:
    url = "/v1/catalog/price-imports"
    doc = sample("gcp")
    denied = app_client.post(url, params={"source": "x"}, json=doc, headers=auth(iso_keys["read"]))
    assert denied.status_code == 403
    before = _counts()
    partial = doc | {"nextPageToken": "CAEQAA"}
    r = app_client.post(
        url, params={"source": "page1"}, json=partial, headers=auth(iso_keys["admin"])
    )
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem")
    assert "nothing changed" in r.json()["detail"] and "nextPageToken" in r.json()["detail"]
    assert r.json()["errors"][0]["loc"] == ["body"]
    assert _counts() == before
    ok = app_client.post(
        url,
        params={"source": "https://cloudbilling.googleapis.com/v1/services/x/skus"},
        json=doc,
        headers=auth(iso_keys["admin"]),
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["provider"] == "gcp" and ok.json()["catalog_version"] == before[0] + 1
    assert ok.json()["imported_by"].startswith("key ")


def test_an_estimate_prices_at_the_imported_row(
    app_client: TestClient, iso_keys: dict[str, str]
) -> None:
    doc = sample("gcp")
    r = app_client.post(
        "/v1/catalog/price-imports",
        params={"source": "gcp-sample", "provider": "gcp"},
        json=doc,
        headers=auth(iso_keys["admin"]),
    )
    assert r.status_code == 201, r.text
    sku = next(s for s in doc["skus"] if s["skuId"] == "SAMPLE-A100-80-OD")
    unit = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"][0]["unitPrice"]
    body: dict[str, Any] = {
        "model": "openai-community/gpt2",
        "dataset": {"num_examples": 1000, "avg_tokens": 200, "max_tokens": 512},
        "methods": ["lora"],
        "training": {"micro_batch_size": 4, "seq_len": 512},
        "hardware": {"gpu": "A100-80GB", "num_gpus": 1, "provider": "gcp"},
    }
    out = app_client.post("/v1/estimates", json=body, headers=auth(iso_keys["read"])).json()
    lora = out["results"]["lora"]
    assert lora["price_per_gpu_hour"] == pytest.approx(int(unit["units"]) + unit["nanos"] / 1e9)
    assert lora["region"] in sku["serviceRegions"]
    assert lora["price_as_of"] == utcnow().date().isoformat()
    assert "Cloud Billing Catalog" in lora["price_source"]
    assert out["catalog_version"] == r.json()["catalog_version"]
    assert not any(n.startswith("stale price: gcp A100-80GB") for n in out["notes"])
    committed = body | {"hardware": body["hardware"] | {"pricing": "committed"}}
    cud = app_client.post("/v1/estimates", json=committed, headers=auth(iso_keys["read"])).json()
    assert cud["results"]["lora"]["pricing"] == "committed"
    assert cud["results"]["lora"]["price_per_gpu_hour"] < lora["price_per_gpu_hour"]
