"""Every container read through DatasetReader from real files: JSON arrays, CSV, Parquet and
Arrow written by pyarrow, gzip and zstd, and folders written by datasets' save_to_disk."""

from __future__ import annotations

import gzip
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import zstandard

from app.datasets.formats import RecordFormat, parse_columns, render_record
from app.datasets.reader import (
    CorruptStream,
    DatasetReader,
    DatasetTooLarge,
    DatasetTooManyLines,
    measure,
)
from app.datasets.sources import Container

LIMIT = 64 * 1024 * 1024
TURNS = [
    {"from": "human", "value": "Hi?"},
    {"from": "gpt", "value": "Hello."},
    {"from": "human", "value": "And again?"},
    {"from": "gpt", "value": "Hello again."},
]
SHAREGPT: dict[str, Any] = {"system": "Be brief.", "conversations": TURNS}
ROWS: list[dict[str, Any]] = [
    {"prompt": f"Q{i}: what follows {i}?\n", "completion": f"{i + 1}"} for i in range(25)
]


def _read(path: Path, **kw: Any) -> tuple[DatasetReader, list[tuple[int, Any]]]:
    reader = DatasetReader(path, max_bytes=LIMIT, **kw)
    return reader, list(reader)


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    return [render_record(r).text for r in rows]


def test_sharegpt_maps_speakers_keeps_the_system_prompt_and_masks_before_the_last_reply() -> None:
    example = render_record(SHAREGPT)
    assert example.format is RecordFormat.SHAREGPT
    assert example.text.startswith("<|system|>\nBe brief.\n<|user|>\nHi?\n<|assistant|>\n")
    assert example.completion == "Hello again.\n"
    same = render_record({"messages": TURNS})  # ShareGPT's from/value in an OpenAI list
    assert same.completion == "Hello again.\n" and "<|system|>" not in same.text


def test_json_array_of_each_shape(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([*ROWS, SHAREGPT], indent=2))
    reader, got = _read(path)
    assert reader.container is Container.JSON and reader.bad_count == 0
    assert [n for n, _ in got] == list(range(1, 27))
    assert [e.text for _, e in got] == _texts([*ROWS, SHAREGPT])
    assert reader.formats == {RecordFormat.PROMPT_COMPLETION: 25, RecordFormat.SHAREGPT: 1}


def test_a_broken_json_array_names_the_element(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"text": "a"}, {"text": "b"} {"text": "c"}]')
    reader, got = _read(path)
    assert len(got) == 2 and reader.bad_count == 1
    assert "not_json: 1 element, e.g. element 3: expected ',' or ']'" in reader.summary()


def test_csv_with_mapped_columns_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    table = pa.table(
        {"question": [r["prompt"] for r in ROWS], "answer": [r["completion"] for r in ROWS]}
    )
    pa_csv.write_csv(table, path)
    reader, got = _read(path, columns=parse_columns("prompt=question,completion=answer"))
    assert reader.container is Container.CSV and reader.bad_count == 0
    assert [e.text for _, e in got] == _texts(ROWS)  # cells stay text: "2" is not an int


def test_csv_without_a_mapping_says_how_to_map(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat?,That.\nWho?,Them.\n")
    reader, got = _read(path)
    assert got == [] and reader.bad_count == 2
    assert "upload with columns=prompt=question,completion=answer" in reader.summary()


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_jsonl_json_and_csv(tmp_path: Path, compress: str) -> None:
    pack = gzip.compress if compress == "gzip" else zstandard.ZstdCompressor().compress
    suffix = ".gz" if compress == "gzip" else ".zst"
    files = {
        f"d.jsonl{suffix}": "".join(json.dumps(r) + "\n" for r in ROWS),
        f"d.json{suffix}": json.dumps(ROWS),
        f"d.csv{suffix}": "prompt,completion\n"
        + "".join(f'"{r["prompt"]}",{r["completion"]}\n' for r in ROWS),
    }
    for name, text in files.items():
        path = tmp_path / name
        path.write_bytes(pack(text.encode()))
        reader, got = _read(path)
        assert reader.compressed and reader.compression == compress, name
        assert [e.text for _, e in got] == _texts(ROWS), name


def test_parquet_with_nested_conversations(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([SHAREGPT] * 30), path, row_group_size=7)
    reader, got = _read(path)
    assert reader.container is Container.PARQUET and len(got) == 30 and reader.bad_count == 0
    assert {e.text for _, e in got} == {render_record(SHAREGPT).text}


def test_arrow_ipc_stream_and_file(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(ROWS)
    stream, file = tmp_path / "s.arrow", tmp_path / "f.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=10)
    with pa.OSFile(str(file), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    for path in (stream, file):
        reader, got = _read(path)
        assert reader.container is Container.ARROW and [e.text for _, e in got] == _texts(ROWS)


def _tar(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        for member in sorted(folder.rglob("*")):
            tar.add(member, arcname=str(member.relative_to(folder)), recursive=False)
    return dest


def test_a_save_to_disk_folder_and_a_dataset_dict(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_list([SHAREGPT] * 12)
    ds.save_to_disk(str(tmp_path / "one"), num_shards=3)
    reader, got = _read(_tar(tmp_path / "one", tmp_path / "one.tar"))
    assert reader.container is Container.HF_DISK and [n for n, _ in got] == list(range(1, 13))
    assert reader.formats == {RecordFormat.SHAREGPT: 12}

    both = datasets.DatasetDict(
        train=datasets.Dataset.from_list(ROWS), test=datasets.Dataset.from_list(ROWS[:3])
    )
    both.save_to_disk(str(tmp_path / "dict"))
    reader, got = _read(_tar(tmp_path / "dict", tmp_path / "dict.tar"))
    assert [e.text for _, e in got] == _texts(ROWS)  # the train split only


def test_damaged_containers_are_corrupt_streams(tmp_path: Path) -> None:
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(parquet.read_bytes()[:-20])
    with pytest.raises(CorruptStream, match="Parquet"):
        _read(cut)
    zst = tmp_path / "d.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "a"}\n' * 1000)[:-9])
    with pytest.raises(CorruptStream, match="zstd"):
        _read(zst)
    gz_parquet = tmp_path / "d.parquet.gz"
    gz_parquet.write_bytes(gzip.compress(parquet.read_bytes()))
    with pytest.raises(CorruptStream, match="upload it as it is"):
        _read(gz_parquet)


def test_a_zstd_bomb_stops_at_the_decompressed_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "aaaa"}\n' * 400_000))
    with pytest.raises(DatasetTooLarge):
        list(DatasetReader(path, max_bytes=1024 * 1024))


def test_ten_thousand_malformed_rows_are_one_problem_per_kind_at_once(tmp_path: Path) -> None:
    lines = []
    for i in range(10_000):
        if i % 5 == 0:
            lines.append("{not json")
        elif i % 5 == 1:
            lines.append(json.dumps({"text": "   "}))
        else:
            lines.append(json.dumps(SHAREGPT | {"conversations": [{"speaker": "x"}]}))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    reader, got = _read(path)
    elapsed = time.perf_counter() - start
    assert got == [] and reader.bad_count == 10_000
    kinds = {p.kind: (p.count, p.rows) for p in reader.problems.values()}
    assert kinds == {
        "not_json": (2000, [1, 6, 11]),
        "empty_text": (2000, [2, 7, 12]),
        "unknown_format": (6000, [3, 4, 5]),
    }
    summary = reader.summary()
    assert summary.startswith("unknown_format: 6000 lines, e.g. lines 3, 4, 5: conversations[0]")
    assert summary.count(";") <= 4  # one clause per kind, not one per row
    print(f"10,000 malformed rows summarised in {elapsed:.3f} s")


def test_caps_count_rows_not_newline_bytes_in_binary_containers(tmp_path: Path) -> None:
    table = pa.table({"text": ["line\n" * 40] * 300})  # 12,000 newlines in 300 rows
    path = tmp_path / "d.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert measure(path, max_bytes=LIMIT, max_lines=1000).lines == 0
    assert len(list(DatasetReader(path, max_bytes=LIMIT, max_lines=300))) == 300
    with pytest.raises(DatasetTooManyLines):
        list(DatasetReader(path, max_bytes=LIMIT, max_lines=299))
    parquet = tmp_path / "d.parquet"
    pq.write_table(table, parquet)
    assert measure(parquet, max_bytes=LIMIT, max_lines=300).lines == 300
    with pytest.raises(DatasetTooManyLines):
        measure(parquet, max_bytes=LIMIT, max_lines=299)


def test_a_json_array_nested_past_the_parser_is_one_bad_element(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('[{"text": "ok"}, ' + "[" * 100_000 + "]" * 100_000 + "]")
    reader, got = _read(path)
    assert len(got) == 1 and reader.bad_count == 1
    assert "too_deep: 1 element, e.g. element 2" in reader.summary()
