"""Read a whole dataset file: its compression and container, then each row rendered to an
`Example`, with the rows that cannot be used counted and summarised one problem per kind.

The upload (app/datasets/service.py) and the worker (worker/training/data.py) both read through
`DatasetReader`, so a file means the same examples in the estimate and in training.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import zstandard

from app.datasets import sources
from app.datasets.formats import (
    BadLineReason,
    ChatRenderer,
    Example,
    RecordError,
    RecordFormat,
    apply_columns,
    parse_json,
    render_record,
)
from app.datasets.sources import Compression, Container, RowError, SourceError

DEFAULT_MAX_BAD_LINES = 20  # rows kept with their detail: enough to see a pattern
SHOWN_ROWS = 3  # row numbers named per kind of problem in a summary
MAX_LINE_BYTES = sources.MAX_ROW_BYTES
# Compressed bytes fed to zstd at once. Its decompressobj returns all a feed decodes to, and an
# RLE block of 3 bytes may decode to 128 KiB (RFC 8878 3.1.1.2), so a feed bounds what a bomb
# puts in memory before the decompressed-size cap sees it: 1 KiB -> at most ~44 MiB.
ZSTD_FEED_BYTES = 1024
BINARY_ROWS = (Container.ARROW, Container.HF_DISK)
# Containers read from a file by offset (footer, member table): they need the file itself.
RANDOM_ACCESS = (Container.PARQUET, Container.HF_DISK)


class CorruptStream(ValueError):
    """The file is damaged or truncated, or not the container it looks like; nothing more can
    be read from it."""


class DatasetTooLarge(Exception):
    """The decompressed data passed `max_bytes` (an oversize upload or a decompression bomb)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"dataset exceeds the limit of {max_bytes} bytes (decompressed)")
        self.max_bytes = max_bytes


class DatasetTooManyLines(Exception):
    """The file holds more than `max_lines` rows (a JSONL's blank lines included)."""

    def __init__(self, max_lines: int) -> None:
        super().__init__(f"dataset has more than {max_lines} lines")
        self.max_lines = max_lines


@dataclass(frozen=True, slots=True)
class StreamSize:
    """What a dataset file holds once decompressed: bytes and lines (rows, for Parquet),
    counted without parsing."""

    compressed: bool
    bytes: int
    lines: int


def measure(source: Path, *, max_bytes: int, max_lines: int) -> StreamSize:
    """Count a file's decompressed bytes and lines at C speed, refusing it (DatasetTooLarge,
    DatasetTooManyLines) as soon as it passes a cap: a file too big to parse is told so before
    any row is parsed. Parquet is sized from its footer (rows, uncompressed bytes); Arrow and
    save_to_disk tars are held to the caps as their batches stream. CorruptStream for a damaged
    compressed stream or footer."""
    with open(source, "rb") as file:
        head, raw = _peek(file, sources.SNIFF_BYTES)
        compression = sources.compression_of(head)
        if compression is Compression.NONE and head.startswith(sources.PARQUET_MAGIC):
            return _parquet_size(source, max_bytes=max_bytes, max_lines=max_lines)
        stream = _decompressed(raw, compression)
        total = lines = 0
        last = b"\n"
        try:
            inner, stream = _peek(stream, sources.SNIFF_BYTES)
            # Binary row containers have no lines: their rows are capped as they stream.
            text = sources.container_of(inner, filename=None) not in BINARY_ROWS
            while chunk := stream.read(sources.READ_CHUNK):
                total += len(chunk)
                lines += chunk.count(b"\n") if text else 0
                last = chunk[-1:] if text else b"\n"
                if total > max_bytes:
                    raise DatasetTooLarge(max_bytes)
                if lines > max_lines:
                    raise DatasetTooManyLines(max_lines)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            if compression is Compression.NONE:
                raise
            raise CorruptStream(f"corrupt {compression} stream: {exc}") from exc
    lines += last != b"\n"  # a last line without its newline
    if lines > max_lines:
        raise DatasetTooManyLines(max_lines)
    return StreamSize(compressed=compression is not Compression.NONE, bytes=total, lines=lines)


def _parquet_size(source: Path, *, max_bytes: int, max_lines: int) -> StreamSize:
    try:
        meta = sources.parquet_metadata(str(source))
    except SourceError as exc:
        raise CorruptStream(str(exc)) from exc
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if size > max_bytes:
        raise DatasetTooLarge(max_bytes)
    if meta.num_rows > max_lines:
        raise DatasetTooManyLines(max_lines)
    return StreamSize(compressed=False, bytes=size, lines=meta.num_rows)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A row that was skipped: its 1-based number, the reason, and a short human detail."""

    line: int
    reason: BadLineReason
    detail: str


@dataclass
class Problem:
    """Every row with one kind of problem: how many, the first few, one detail and a hint."""

    kind: BadLineReason
    count: int = 0
    rows: list[int] = field(default_factory=list)
    detail: str = ""
    hint: str | None = None

    def sentence(self, unit: str) -> str:
        """`unknown_format: 412 rows, e.g. rows 1, 2, 3: expected ...; looks like ...`."""
        many = unit + ("s" if self.count != 1 else "")
        shown = ", ".join(map(str, self.rows))
        text = f"{self.kind}: {self.count} {many}, e.g. {unit}{'s' if len(self.rows) > 1 else ''}"
        text += f" {shown}: {self.detail}"
        return text + (f"; {self.hint}" if self.hint else "")


class DatasetReader:
    """Iterate `(row number, Example)` over a dataset file, skipping and counting bad rows.

    Compression (gzip, zstd) and container (`sources.Container`) are told by the first bytes;
    CSV by a .csv/.tsv `filename`. `columns` renames the file's columns to tunecost's fields
    (`formats.parse_columns`); `chat` renders conversations with the model's template. Reading
    more than `max_bytes` of decompressed data raises DatasetTooLarge, however it is stored;
    a row numbered past `max_lines` (a JSONL's blank lines count) DatasetTooManyLines.
    """

    def __init__(
        self,
        source: IO[bytes] | Path | str,
        *,
        max_bytes: int,
        max_lines: int | None = None,
        max_bad_lines: int = DEFAULT_MAX_BAD_LINES,
        filename: str | None = None,
        columns: Mapping[str, str] | None = None,
        chat: ChatRenderer | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._source = source
        self.filename = filename or (str(source) if isinstance(source, (str, Path)) else None)
        self.columns = columns
        self.chat = chat
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.max_bad_lines = max_bad_lines
        self.bad_lines: list[BadLine] = []
        self.problems: dict[BadLineReason, Problem] = {}
        self.bad_count = 0
        self.examples = 0
        self.bytes_read = 0
        self.compression = Compression.NONE
        self.container = Container.JSONL
        self.formats: Counter[RecordFormat] = Counter()
        self.templated = 0  # chat examples rendered by the model's own template
        self.plain_chats = 0  # chat examples rendered with the plain delimiters

    @property
    def compressed(self) -> bool:
        """Whether the file was gzip- or zstd-compressed."""
        return self.compression is not Compression.NONE

    @property
    def format(self) -> RecordFormat | Literal["mixed"] | None:
        """The single format of the good records seen so far, "mixed", or None if none yet."""
        if len(self.formats) > 1:
            return "mixed"
        return next(iter(self.formats), None)

    @property
    def unit(self) -> str:
        """What a row is called in this container's messages: line, element or row."""
        return {Container.JSONL: "line", Container.JSON: "element"}.get(self.container, "row")

    def summary(self) -> str:
        """One sentence per kind of problem, most frequent first."""
        ordered = sorted(self.problems.values(), key=lambda p: -p.count)
        return "; ".join(p.sentence(self.unit) for p in ordered)

    def __iter__(self) -> Iterator[tuple[int, Example]]:
        if isinstance(self._source, (str, Path)):
            with open(self._source, "rb") as raw:
                yield from self._iter_file(raw)
        else:
            yield from self._iter_file(self._source)

    def _iter_file(self, raw: IO[bytes]) -> Iterator[tuple[int, Example]]:
        head, raw = _peek(raw, sources.SNIFF_BYTES)
        self.compression = sources.compression_of(head)
        stream = _decompressed(raw, self.compression)
        try:
            inner, stream = _peek(stream, sources.SNIFF_BYTES)
            self.container = sources.container_of(inner, filename=self.filename)
            for row, item in self._rows(stream):
                if self.max_lines is not None and row > self.max_lines:
                    raise DatasetTooManyLines(self.max_lines)
                example = self._example(row, item)
                if example is not None:
                    yield row, example
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            if not self.compressed:
                raise
            raise CorruptStream(f"corrupt {self.compression} stream: {exc}") from exc
        except SourceError as exc:
            raise CorruptStream(str(exc)) from exc

    def _rows(self, stream: IO[bytes]) -> Iterator[tuple[int, object | RowError]]:
        match self.container:
            case Container.JSONL:
                return self._jsonl(stream)
            case Container.JSON:
                return sources.json_array_rows(stream, self._count)
            case Container.CSV:
                return sources.csv_rows(stream, self._count, filename=self.filename)
            case Container.ARROW:
                path = self._source
                plain = not self.compressed and isinstance(path, (str, Path))
                return sources.arrow_rows(str(path) if plain else stream, self._count)
        path = self._source
        if self.compressed or not isinstance(path, (str, Path)):
            raise SourceError(
                f"a {self.container} dataset is read from its file, uncompressed: upload it as it "
                "is (its data is compressed inside)"
            )
        if self.container is Container.PARQUET:
            return sources.parquet_rows(str(path), self._count)
        return sources.hf_disk_rows(str(path), self._count)

    def _jsonl(self, stream: IO[bytes]) -> Iterator[tuple[int, object | RowError]]:
        for line_no, line in enumerate(self._lines(stream), start=1):
            if line is None:
                detail = f"the line is longer than {MAX_LINE_BYTES} bytes"
                yield line_no, RowError(BadLineReason.LINE_TOO_LONG, detail)
            elif line.strip():
                try:
                    yield line_no, parse_json(line)
                except RecordError as exc:
                    yield line_no, RowError(exc.reason, exc.detail)

    def _example(self, row: int, item: object | RowError) -> Example | None:
        if isinstance(item, RowError):
            self._record_bad(row, BadLineReason(item.reason), item.detail, None)
            return None
        try:
            example = render_record(apply_columns(item, self.columns), chat=self.chat)
        except RecordError as exc:
            self._record_bad(row, exc.reason, exc.detail, exc.hint)
            return None
        self.examples += 1
        self.formats[example.format] += 1
        if example.templated:
            self.templated += 1
        elif example.format in (RecordFormat.CHAT, RecordFormat.SHAREGPT):
            self.plain_chats += 1
        return example

    def _lines(self, stream: IO[bytes]) -> Iterator[bytes | None]:
        """Lines of the stream; None for a line over MAX_LINE_BYTES, which is skipped unread.

        readline(limit) reads at most what the line cap and the budget still allow, so one
        enormous line (or a decompression bomb without newlines) never lands in memory whole.
        """
        while True:
            line = stream.readline(self._limit())
            if not line:
                return
            self._count(len(line))
            if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
                yield line
                continue
            while line and not line.endswith(b"\n"):  # drain the rest of the long line
                line = stream.readline(self._limit())
                self._count(len(line))
            yield None

    def _limit(self) -> int:
        return min(MAX_LINE_BYTES, self.max_bytes - self.bytes_read) + 1

    def _count(self, n: int) -> None:
        self.bytes_read += n
        if self.bytes_read > self.max_bytes:
            raise DatasetTooLarge(self.max_bytes)

    def _record_bad(self, row: int, reason: BadLineReason, detail: str, hint: str | None) -> None:
        self.bad_count += 1
        if len(self.bad_lines) < self.max_bad_lines:
            self.bad_lines.append(BadLine(row, reason, detail))
        problem = self.problems.setdefault(reason, Problem(reason, detail=detail, hint=hint))
        problem.count += 1
        if len(problem.rows) < SHOWN_ROWS:
            problem.rows.append(row)


def _decompressed(raw: IO[bytes], compression: Compression) -> IO[bytes]:
    if compression is Compression.GZIP:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if compression is Compression.ZSTD:
        return cast(IO[bytes], io.BufferedReader(_ZstdFrames(raw)))
    return raw


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of one or more zstd frames; a frame cut short is an error.

    zstandard's own stream reader ends quietly at a truncated frame, which would train on a
    silently shortened dataset; its decompressobj says whether the frame was complete.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._raw.read(ZSTD_FEED_BYTES)
            if not chunk:
                if self._started and not self._frame.eof:
                    raise zstandard.ZstdError("the zstd frame is truncated")
                return 0
            self._started = True
            while chunk:
                self._pending += self._frame.decompress(chunk)
                chunk = self._frame.unused_data if self._frame.eof else b""
                if chunk:  # the next frame of a multi-frame file
                    self._frame = zstandard.ZstdDecompressor().decompressobj()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _peek(stream: IO[bytes], n: int) -> tuple[bytes, IO[bytes]]:
    """The first `n` bytes of `stream` without consuming them, and the stream to read from."""
    if hasattr(stream, "peek"):
        return bytes(stream.peek(n)[:n]), stream
    if stream.seekable():
        start = stream.tell()
        head = stream.read(n)
        stream.seek(start)
        return head, stream
    buffered = io.BufferedReader(cast(io.RawIOBase, stream))  # forward-only raw streams
    return bytes(buffered.peek(n)[:n]), cast(IO[bytes], buffered)
