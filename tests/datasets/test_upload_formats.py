"""POST /v1/datasets with each container, real files written by pyarrow, gzip, zstd and
datasets' save_to_disk; the form's fields checked by name."""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import zstandard
from fastapi.testclient import TestClient

from app.config import get_settings
from app.datasets.tokens import LLAMA3, QWEN2
from devtools.tinymodel import make_tiny_dataset
from tests.conftest import auth

SHAREGPT: dict[str, Any] = {
    "system": "Answer in one word.",
    "conversations": [{"from": "human", "value": "Sky colour?"}, {"from": "gpt", "value": "Blue"}],
}
QA = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(30)]


def _post(client: TestClient, key: str, name: str, payload: bytes, **fields: str) -> Any:
    files = {"file": (name, io.BytesIO(payload), "application/octet-stream")}
    return client.post("/v1/datasets", files=files, data=fields, headers=auth(key))


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _arrow_stream(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _csv(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _save_to_disk_tar(rows: list[dict[str, Any]], tmp: Path) -> bytes:
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp / "hf"), num_shards=2)
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w") as tar:
        for member in sorted((tmp / "hf").rglob("*")):
            tar.add(member, arcname=str(member.relative_to(tmp / "hf")), recursive=False)
    return sink.getvalue()


def _cases(tmp: Path) -> list[tuple[str, bytes, dict[str, str], str, str, str]]:
    """(file name, bytes, form fields, container, compression, record format)."""
    jsonl = make_tiny_dataset(tmp / "a.jsonl", n=30, fmt="alpaca").read_bytes()
    cols = {"columns": "prompt=question,completion=answer"}
    return [
        (
            "a.json",
            json.dumps([json.loads(x) for x in jsonl.splitlines()]).encode(),
            {},
            "json",
            "none",
            "alpaca",
        ),
        (
            "s.jsonl",
            "".join(json.dumps(SHAREGPT) + "\n" for _ in range(30)).encode(),
            {},
            "jsonl",
            "none",
            "sharegpt",
        ),
        ("a.jsonl.zst", zstandard.ZstdCompressor().compress(jsonl), {}, "jsonl", "zstd", "alpaca"),
        ("qa.csv", _csv(QA), cols, "csv", "none", "prompt_completion"),
        ("qa.csv.gz", gzip.compress(_csv(QA)), cols, "csv", "gzip", "prompt_completion"),
        ("s.parquet", _parquet([SHAREGPT] * 30), {}, "parquet", "none", "sharegpt"),
        ("qa.arrow", _arrow_stream(QA), cols, "arrow", "none", "prompt_completion"),
        ("hf.tar", _save_to_disk_tar([SHAREGPT] * 30, tmp), {}, "hf_disk", "none", "sharegpt"),
    ]


def test_each_container_is_read_stored_and_described(
    app_client: TestClient, keys: dict[str, str], tmp_path: Path
) -> None:
    for name, payload, fields, container, compression, fmt in _cases(tmp_path):
        r = _post(app_client, keys["submit"], name, payload, **fields)
        assert r.status_code == 201, (name, r.text)
        body = r.json()
        assert (body["container"], body["compression"], body["format"]) == (
            container,
            compression,
            fmt,
        ), name
        assert body["num_examples"] == 30 and body["formats"] == {fmt: 30}, name
        stored = Path(get_settings().storage_root) / body["storage_path"]
        assert stored.read_bytes() == payload, name  # kept as uploaded, its suffix says what
        assert body["storage_path"].endswith(
            {"hf_disk": ".tar"}.get(container, f".{container}")
            + {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
        ), name
        if fields:
            assert body["columns"] == {"question": "prompt", "answer": "completion"}, name
        if fmt == "sharegpt":
            assert body["chat_template"] == {"model_template": 0, "plain": 30}, name


def test_unknown_form_fields_are_refused_by_name(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    payload = b'{"text": "hello"}\n'
    r = _post(app_client, keys["submit"], "d.jsonl", payload, tokenizer="x", colour="red")
    assert r.status_code == 422, r.text
    body = r.json()
    assert "unknown form field(s) colour, tokenizer" in body["detail"]
    assert body["errors"][0]["loc"] == ["colour"]
    bad = _post(app_client, keys["submit"], "d.jsonl", payload, columns="answer")
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["columns"]
    assert "'answer' is not <field>=<column>" in bad.json()["detail"]
    worse = _post(app_client, keys["submit"], "d.jsonl", payload, columns="reply=answer")
    assert "'reply' is not a field" in worse.json()["detail"]


@pytest.mark.parametrize(
    ("name", "payload", "fragment"),
    [
        ("d.parquet", b"PAR1" + b"\x00" * 64, "not a readable Parquet file"),
        ("d.json", b'[{"text": "a"}, {"text": ', "e.g. element 2: invalid JSON in element 2"),
        ("d.jsonl.zst", zstandard.ZstdCompressor().compress(b'{"text": "a"}\n' * 99)[:-5], "zstd"),
    ],
)
def test_damaged_files_are_422_naming_the_container(
    app_client: TestClient, keys: dict[str, str], name: str, payload: bytes, fragment: str
) -> None:
    r = _post(app_client, keys["submit"], name, payload)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_a_catalog_model_without_its_tokenizer_gets_its_familys_measured_approximation(
    app_client: TestClient, keys: dict[str, str], tmp_path: Path
) -> None:
    path = make_tiny_dataset(tmp_path / "t.jsonl", n=40, fmt="text", seed=2)
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    r = _post(
        app_client, keys["submit"], "t.jsonl", path.read_bytes(), model="meta-llama/Llama-3.1-8B"
    )
    assert r.status_code == 201, r.text
    stats = r.json()["stats"]
    assert stats["tokenizer"] == "approximate" and stats["token_error"] == LLAMA3.error
    assert (
        "meta-llama/Llama-3.1-8B" in stats["tokenizer_note"] and "4.05" in stats["tokenizer_note"]
    )
    assert stats["total_tokens"] == sum(math.ceil(len(t) / LLAMA3.chars_per_token) for t in texts)
    mistral = _post(
        app_client, keys["submit"], "t.jsonl", path.read_bytes(), model="mistralai/Mistral-7B-v0.1"
    )
    assert "approximated by Llama 2's" in mistral.json()["stats"]["tokenizer_note"]

    unknown = _post(app_client, keys["submit"], "t.jsonl", path.read_bytes(), model="acme/none")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["model"]
    both = _post(
        app_client, keys["submit"], "t.jsonl", path.read_bytes(), model="gpt2", model_path="x"
    )
    assert both.status_code == 422 and "not both" in both.json()["detail"]


def test_an_approximate_count_widens_the_estimates_time_and_cost_ranges(
    app_client: TestClient, keys: dict[str, str], tmp_path: Path
) -> None:
    path = make_tiny_dataset(tmp_path / "t.jsonl", n=50, fmt="alpaca", seed=6)
    ds = _post(app_client, keys["submit"], "t.jsonl", path.read_bytes(), model="Qwen/Qwen2.5-0.5B")
    ds_body = ds.json()
    common = {"model": "Qwen/Qwen2.5-0.5B", "hardware": {"gpu": "A100-80GB"}, "methods": ["lora"]}
    by_id = app_client.post(
        "/v1/estimates",
        json={**common, "dataset": {"dataset_id": ds_body["id"]}},
        headers=auth(keys["submit"]),
    ).json()
    shape = {
        "num_examples": ds_body["num_examples"],
        "avg_tokens": ds_body["stats"]["mean_tokens"],
        "max_tokens": ds_body["max_tokens"],
    }
    by_shape = app_client.post(
        "/v1/estimates", json={**common, "dataset": shape}, headers=auth(keys["submit"])
    ).json()
    wide, narrow = by_id["results"]["lora"], by_shape["results"]["lora"]
    assert wide["hours"] == narrow["hours"]  # the expected figure stays; its range widens
    for key in ("hours_range", "cost_usd_range"):
        assert wide[key]["low"] == pytest.approx(narrow[key]["low"] * (1 - QWEN2.error))
        assert wide[key]["high"] == pytest.approx(narrow[key]["high"] * (1 + QWEN2.error))
    assert any("widened by 9% each way" in n for n in by_id["notes"])
    assert by_id["dataset_check"]["approximate"] is True
