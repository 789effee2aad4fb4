"""`tunecost estimate`, `make-tiny-model` and `make-tiny-dataset` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli.estimate import parse_amount
from app.cli.main import cli

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
ISSUE_EXAMPLE = ["--model", "meta-llama/Llama-3.1-8B", "--tokens", "20M", "--gpu", "H100-80GB"]


def test_amounts_parse_with_suffixes() -> None:
    assert parse_amount("20M") == 20e6
    assert parse_amount("1.5b") == 1.5e9
    assert parse_amount("750000") == 750000
    assert parse_amount("2e6") == 2e6
    with pytest.raises(Exception, match="not an amount"):
        parse_amount("lots")


def test_estimate_prints_the_three_methods_without_a_server() -> None:
    result = runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    for word in ("full", "lora", "qlora", "memory / GPU", "fits", "cost", "artifact"):
        assert word in out
    assert "H100-80GB-SXM" in out  # the alias resolved to the catalog id
    assert "Recommendation:" in out and "$" in out


def test_estimate_json_is_the_library_answer() -> None:
    result = runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["results"]) == {"full", "lora", "qlora"}
    assert data["dataset"]["tokens_per_epoch"] == 20e6
    assert {r["gpu"] for r in data["results"].values()} == {"H100-80GB-SXM"}
    assert data["results"]["lora"]["trainable_params"] < data["results"]["full"]["trainable_params"]
    assert data["recommendation"]["method"] in ("full", "lora", "qlora")


def test_estimate_reports_bad_input_without_a_traceback() -> None:
    result = runner.invoke(cli, ["estimate", "--model", "meta-llama/Llama-3.1-8", "--tokens", "1M"])
    assert result.exit_code == 2
    assert "meta-llama/Llama-3.1-8B" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE[:4], "--gpu", "H1000"])
    assert result.exit_code == 2 and "valid ids" in result.output
    result = runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE[:4], "--lora-r", "0"])
    assert result.exit_code == 2 and "lora.r" in result.output


def test_estimate_against_a_server_prints_the_same(
    app_client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    import httpx2

    def via_test_client(url: str, **kwargs: Any) -> httpx2.Response:
        kwargs.pop("timeout", None)
        return app_client.post(url.removeprefix("http://tunecost.test"), **kwargs)

    monkeypatch.setattr(httpx, "post", via_test_client)
    args = ["estimate", *ISSUE_EXAMPLE, "--json", "--url", "http://tunecost.test"]
    result = runner.invoke(cli, [*args, "--key", keys["read"]])
    assert result.exit_code == 0, result.output
    remote = json.loads(result.output)
    local = json.loads(runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE, "--json"]).output)
    assert remote["id"].startswith("est_")
    assert remote["results"]["lora"]["memory"] == local["results"]["lora"]["memory"]
    assert remote["recommendation"]["method"] == local["recommendation"]["method"]
    denied = runner.invoke(cli, args)
    assert denied.exit_code == 2 and "401" in denied.output


def test_make_tiny_model_and_dataset(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["make-tiny-model", str(tmp_path / "m"), "--hidden-size", "32"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["hidden_size"] == 32 and (tmp_path / "m" / "tokenizer.json").is_file()
    result = runner.invoke(
        cli, ["make-tiny-dataset", str(tmp_path / "d.jsonl"), "--n", "7", "--format", "chat"]
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all("messages" in json.loads(line) for line in lines)
    # The folder works as --model: its config is sent inline.
    result = runner.invoke(
        cli, ["estimate", "--model", str(tmp_path / "m"), "--tokens", "1M", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"]["hidden_size"] == 32


def test_estimate_shows_the_price_date_and_warns_when_it_is_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.catalog import load_catalog
    from app.config import get_settings

    oldest = min(r.as_of for r in load_catalog().prices)
    monkeypatch.setenv("TUNECOST_PRICE_MAX_AGE_DAYS", "1")
    get_settings.cache_clear()
    try:
        stale = runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE], env=WIDE)
        monkeypatch.setenv("TUNECOST_PRICE_MAX_AGE_DAYS", "3650")
        get_settings.cache_clear()
        fresh = runner.invoke(cli, ["estimate", *ISSUE_EXAMPLE], env=WIDE)
    finally:
        get_settings.cache_clear()
    assert stale.exit_code == 0 and fresh.exit_code == 0, stale.output
    assert "price as of" in stale.output and oldest.isoformat() in stale.output
    assert "stale price:" in stale.output.replace("\n", " ")
    assert "stale price:" not in fresh.output.replace("\n", " ")
