"""The containers a dataset arrives in, each read row by row into plain records.

JSON Lines, a JSON array, CSV (each optionally gzip- or zstd-compressed), Parquet, an Arrow IPC
file or stream, and a Hugging Face `datasets` folder written by `save_to_disk` (sent as a tar of
the folder: `tunecost datasets upload <folder>` makes it). The container is told by the first
bytes, never by the name, except CSV, which has no signature: a name ending .csv or .tsv (before
any .gz/.zst).

Every reader yields `(row number, record or RowError)` with 1-based row numbers: JSONL lines
(blank lines counted, so the numbers match an editor's), the elements of a JSON array, the data
rows of a CSV (the header is not a row), the rows of the columnar formats in file order. Work per
row is bounded: no reader holds more than one row (or one Arrow record batch) at a time, besides
what the decompressor buffers, and `count` is told every decompressed byte read so that the
caller can stop a decompression bomb.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import IO, Any

import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 section 2.3.1: ID1, ID2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878 section 3.1.1: Magic_Number 0xFD2FB528, little-endian
PARQUET_MAGIC = b"PAR1"  # Apache Parquet file format: "PAR1" at the start and the end
ARROW_FILE_MAGIC = b"ARROW1"  # Arrow IPC file format ("Feather v2"): "ARROW1" + padding
ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"  # Arrow IPC stream: each message opens with 0xFFFFFFFF
TAR_MAGIC_OFFSET, TAR_MAGIC = 257, b"ustar"  # POSIX ustar header: magic at offset 257
SNIFF_BYTES = 512  # one tar header block: enough to see every signature above

# One example of 16 MiB is about 4M tokens: 30x the longest context of any catalog model
# (131,072 tokens). A longer row is refused without ever being held in memory whole.
MAX_ROW_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024  # bytes read at a time from a JSON array or a CSV
ARROW_BATCH_ROWS = 1024  # rows converted to Python at once from Parquet and Arrow

# csv's per-field cap is 128 KiB by default; a row may be as long as any other dataset row.
csv.field_size_limit(MAX_ROW_BYTES)

Counter = Callable[[int], None]


class Container(StrEnum):
    """How the rows of an upload are laid out."""

    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    ARROW = "arrow"
    HF_DISK = "hf_disk"  # a `datasets` save_to_disk folder, as a tar


class Compression(StrEnum):
    """The compression around a row-oriented container."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


# Suffix of the stored file per container, so a stored dataset keeps what it is.
SUFFIXES = {
    Container.JSONL: ".jsonl",
    Container.JSON: ".json",
    Container.CSV: ".csv",
    Container.PARQUET: ".parquet",
    Container.ARROW: ".arrow",
    Container.HF_DISK: ".tar",
}
COMPRESSED_SUFFIXES = {Compression.NONE: "", Compression.GZIP: ".gz", Compression.ZSTD: ".zst"}


class SourceError(ValueError):
    """The container itself cannot be read (damaged, truncated, not what it claims)."""


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that could not be read as a record: why (a BadLineReason value) and how."""

    reason: str
    detail: str


def compression_of(head: bytes) -> Compression:
    """The compression told by a stream's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def container_of(head: bytes, *, filename: str | None) -> Container:
    """The container told by its first (decompressed) bytes, or by a .csv/.tsv name."""
    if head.startswith(PARQUET_MAGIC):
        return Container.PARQUET
    if head.startswith((ARROW_FILE_MAGIC, ARROW_STREAM_MAGIC)):
        return Container.ARROW
    if head[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + len(TAR_MAGIC)] == TAR_MAGIC:
        return Container.HF_DISK
    if filename and _stem_suffix(filename) in (".csv", ".tsv"):
        return Container.CSV
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return Container.JSON
    return Container.JSONL


def _stem_suffix(filename: str) -> str:
    path = PurePosixPath(filename.lower())
    if path.suffix in (".gz", ".zst", ".zstd"):
        path = path.with_suffix("")
    return path.suffix


def json_array_rows(stream: IO[bytes], count: Counter) -> Iterator[tuple[int, object | RowError]]:
    """The elements of one JSON array, decoded one at a time.

    A syntax error ends the reading (the rest of the array has no reliable start); it is
    reported as the row it happened in.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof, want = "", 0, False, READ_CHUNK

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = stream.read(want)
        count(len(chunk))
        eof = not chunk
        try:
            buf = buf[pos:] + utf8.decode(chunk, final=eof)
        except UnicodeDecodeError as exc:
            raise SourceError(f"the JSON array is not valid UTF-8: {exc.reason}") from None
        pos = 0
        return True

    def skip_space() -> str | None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return None

    if skip_space() != "[":
        raise SourceError("expected a JSON array opening with '['")
    pos += 1
    row = 0
    while True:
        ch = skip_space()
        if ch == "]" and row == 0:
            return
        row += 1
        if ch is None:
            yield row, RowError("not_json", "the JSON array is not closed (truncated file?)")
            return
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except RecursionError:  # the parser recurses per level: far past any record's need
                yield row, RowError("too_deep", f"element {row} nests too deep to parse")
                return
            except json.JSONDecodeError as exc:
                if len(buf) - pos > MAX_ROW_BYTES:
                    yield (
                        row,
                        RowError("line_too_long", f"an element is over {MAX_ROW_BYTES} bytes"),
                    )
                    return
                if not more():
                    yield row, RowError("not_json", f"invalid JSON in element {row}: {exc.msg}")
                    return
                want = max(READ_CHUNK, 2 * (len(buf) - pos))  # doubling: log(n) re-parses
        want = READ_CHUNK
        pos = end
        yield row, value
        ch = skip_space()
        if ch == "]":
            return
        if ch != ",":
            found = "the end of the file" if ch is None else repr(ch)
            yield (
                row + 1,
                RowError("not_json", f"expected ',' or ']' after element {row}, got {found}"),
            )
            return
        pos += 1


class _CountingReader(io.RawIOBase):
    """A byte stream that reports every byte read to `count` (for csv's text wrapper)."""

    def __init__(self, stream: IO[bytes], count: Counter) -> None:
        self._stream, self._count = stream, count

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        self._count(len(data))
        buffer[: len(data)] = data
        return len(data)


def csv_rows(
    stream: IO[bytes], count: Counter, *, filename: str | None
) -> Iterator[tuple[int, object | RowError]]:
    """Data rows of a CSV (or TSV) with a header row, as {column: text}.

    The standard library's reader, not pyarrow's: cells stay the text that was written (pyarrow
    infers types, turning a "text" column of digits into integers) and rows stream one at a time.
    """
    delimiter = "\t" if filename and _stem_suffix(filename) == ".tsv" else ","
    text = io.TextIOWrapper(
        io.BufferedReader(_CountingReader(stream, count), READ_CHUNK),
        encoding="utf-8-sig",
        newline="",
    )
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip() for h in header]
        for row, cells in enumerate(reader, start=1):
            if not cells:
                continue
            if len(cells) != len(names):
                detail = f"{len(cells)} cells under a header of {len(names)} columns"
                yield row, RowError("unknown_format", detail)
                continue
            yield row, dict(zip(names, cells, strict=True))
    except UnicodeDecodeError as exc:
        raise SourceError(f"the CSV is not valid UTF-8 ({exc.reason})") from None
    except csv.Error as exc:
        raise SourceError(f"the CSV cannot be read past row {reader.line_num}: {exc}") from None


def _batches_rows(
    batches: Iterator[pa.RecordBatch], count: Counter, *, start: int = 1
) -> Iterator[tuple[int, object | RowError]]:
    row = start - 1
    for batch in batches:
        count(batch.nbytes)
        for record in batch.to_pylist():
            row += 1
            yield row, record


def parquet_rows(path: str, count: Counter) -> Iterator[tuple[int, object | RowError]]:
    """Rows of a Parquet file, a record batch at a time."""
    try:
        parquet = pq.ParquetFile(path)
        yield from _batches_rows(parquet.iter_batches(batch_size=ARROW_BATCH_ROWS), count)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"not a readable Parquet file: {exc}") from None


def parquet_metadata(path: str) -> Any:
    """A Parquet file's footer: rows and row groups, read without the data."""
    try:
        return pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"not a readable Parquet file: {exc}") from None


def arrow_rows(source: str | IO[bytes], count: Counter) -> Iterator[tuple[int, object | RowError]]:
    """Rows of an Arrow IPC stream (what `datasets` writes) or file, a batch at a time."""
    try:
        yield from _batches_rows(_arrow_batches(source), count)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"not a readable Arrow IPC file: {exc}") from None


def _arrow_batches(source: str | IO[bytes]) -> Iterator[pa.RecordBatch]:
    try:
        yield from pa_ipc.open_stream(source)
    except pa.ArrowInvalid:
        if not isinstance(source, str):
            raise
        file = pa_ipc.open_file(source)  # the IPC file format: batches by index
        for i in range(file.num_record_batches):
            yield file.get_batch(i)


HF_SPLIT_PREFERENCE = ("train",)  # a DatasetDict's split trained on when it has several


def hf_disk_rows(path: str, count: Counter) -> Iterator[tuple[int, object | RowError]]:
    """Rows of a `datasets` save_to_disk folder sent as a tar: its Arrow shards, in the order
    its state.json lists them (a DatasetDict: the train split, or its only split).

    Nothing is extracted to disk; member names are only matched, never opened as paths.
    """
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {_member_path(m.name): m for m in tar.getmembers() if m.isfile()}
            shards = _hf_shards(tar, members)
            done = 0
            for shard in shards:
                fh = tar.extractfile(members[shard])
                assert fh is not None  # a regular file member
                for row, record in _batches_rows(_arrow_batches(fh), count, start=done + 1):
                    done = row
                    yield row, record
    except (tarfile.TarError, pa.ArrowException, OSError, EOFError) as exc:
        raise SourceError(f"not a readable save_to_disk folder (tar): {exc}") from None


def _member_path(name: str) -> str:
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "/")]
    return "/".join(parts)


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    fh = tar.extractfile(member)
    if fh is None or member.size > 1024 * 1024:
        raise SourceError(f"{member.name} is not a small JSON file")
    try:
        return json.loads(fh.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{member.name} is not valid JSON: {exc}") from None


def _hf_shards(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[str]:
    states = sorted(p for p in members if PurePosixPath(p).name == "state.json")
    if not states:
        raise SourceError(
            "the tar holds no state.json: send a folder written by datasets' save_to_disk"
        )
    by_split = {str(PurePosixPath(p).parent): p for p in states}
    if len(by_split) > 1:
        splits = {PurePosixPath(d).name: d for d in by_split}
        chosen = next((splits[s] for s in HF_SPLIT_PREFERENCE if s in splits), None)
        if chosen is None:
            names = ", ".join(sorted(splits))
            raise SourceError(f"the DatasetDict has splits {names} and none is 'train'")
        by_split = {chosen: by_split[chosen]}
    folder, state_path = next(iter(by_split.items()))
    state = _read_json(tar, members[state_path])
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not files:
        raise SourceError(f"{state_path} lists no _data_files")
    shards = []
    for entry in files:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise SourceError(f"{state_path} names a data file that is not a plain file name")
        shard = _member_path(f"{folder}/{name}") if folder != "." else name
        if shard not in members:
            raise SourceError(f"{state_path} names {name}, which the tar does not hold")
        shards.append(shard)
    return shards
