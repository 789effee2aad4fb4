"""JSONL fine-tuning records: detect each record's format, render it to training text, and read a
(possibly gzipped) file line by line with a hard cap on the decompressed size.

Pure functions and one small reader class; no HTTP, no database, no tokenizer. The upload API and
the token statistics build on `DatasetReader`; the worker renders records with `render_record`.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from pathlib import Path
from typing import IO, Literal, cast

GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 section 2.3.1: ID1, ID2
DEFAULT_MAX_BAD_LINES = 20  # enough to see a pattern in a bad file without a huge error body

# Plain delimiters, not a model's chat template: the same text for every model, so token counts
# are comparable across models. A model-specific template can be applied by the caller instead.
ALPACA_INSTRUCTION = "### Instruction:\n"
ALPACA_INPUT = "\n\n### Input:\n"
ALPACA_RESPONSE = "\n\n### Response:\n"
CHAT_TURN = "<|{role}|>\n"
CHAT_TURN_END = "\n"


class RecordFormat(StrEnum):
    """The record shapes tunecost recognises in a JSONL line."""

    TEXT = "text"  # {"text"}
    PROMPT_COMPLETION = "prompt_completion"  # {"prompt", "completion"}
    ALPACA = "alpaca"  # {"instruction", "input"?, "output"}
    CHAT = "chat"  # {"messages": [{"role", "content"}, ...]}


class BadLineReason(StrEnum):
    """Why a line cannot be used for training."""

    NOT_JSON = "not_json"
    UNKNOWN_FORMAT = "unknown_format"
    EMPTY_TEXT = "empty_text"
    LINE_TOO_LONG = "line_too_long"
    TOO_DEEP = "too_deep"
    TOO_MANY_MESSAGES = "too_many_messages"


# One example of 16 MiB is about 4M tokens: 30x the longest context of any catalog model
# (131,072 tokens). A longer line is refused without ever being held in memory whole.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Nesting of a record's JSON: every known format needs 3 levels (record, messages, message);
# 64 leaves room for metadata fields and keeps the parser far from Python's recursion limit
# (1000), which a deeper line would otherwise hit as a RecursionError.
MAX_JSON_DEPTH = 64
# Messages in one chat record. A turn costs at least its role header and line end (~4 tokens),
# so the longest context of any catalog model (131,072 tokens) holds at most ~32k of them; real
# multi-turn data has tens. 4096 refuses only records that are not conversations.
MAX_CHAT_MESSAGES = 4096
READ_CHUNK = 1024 * 1024  # bytes per read while a file's lines and bytes are counted


class RecordError(ValueError):
    """A record that is valid JSON but cannot be rendered; `reason` says which kind of problem."""

    def __init__(self, reason: BadLineReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class CorruptStream(ValueError):
    """The gzip stream is damaged or truncated; no further lines can be read."""


class DatasetTooLarge(Exception):
    """The decompressed stream passed `max_bytes` (an oversize upload or a gzip bomb)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"dataset exceeds the limit of {max_bytes} bytes (decompressed)")
        self.max_bytes = max_bytes


class DatasetTooManyLines(Exception):
    """The stream holds more than `max_lines` lines (blank ones included)."""

    def __init__(self, max_lines: int) -> None:
        super().__init__(f"dataset has more than {max_lines} lines")
        self.max_lines = max_lines


@dataclass(frozen=True, slots=True)
class StreamSize:
    """What a dataset file holds once decompressed: bytes and lines, counted without parsing."""

    compressed: bool
    bytes: int
    lines: int


def measure(source: Path, *, max_bytes: int, max_lines: int) -> StreamSize:
    """Count a (possibly gzipped) file's decompressed bytes and lines at C speed, refusing it
    (DatasetTooLarge, DatasetTooManyLines) as soon as it passes a cap: a file too big to parse
    is told so before any line is parsed. CorruptStream for a damaged gzip stream."""
    with open(source, "rb") as raw:
        compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
        stream: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if compressed else raw
        total = lines = 0
        last = b"\n"
        try:
            while chunk := stream.read(READ_CHUNK):
                total += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                if total > max_bytes:
                    raise DatasetTooLarge(max_bytes)
                if lines > max_lines:
                    raise DatasetTooManyLines(max_lines)
        except (OSError, EOFError, zlib.error) as exc:
            if not compressed:
                raise
            raise CorruptStream(f"corrupt gzip stream: {exc}") from exc
    lines += last != b"\n"  # a last line without its newline
    if lines > max_lines:
        raise DatasetTooManyLines(max_lines)
    return StreamSize(compressed=compressed, bytes=total, lines=lines)


@dataclass(frozen=True, slots=True)
class Example:
    """One rendered training example.

    `text` is what the model trains on; `text[:prompt_chars]` is the prompt part, whose tokens a
    trainer may mask out of the loss (0 for plain text: everything is trained on).
    """

    format: RecordFormat
    text: str
    prompt_chars: int = 0

    @property
    def prompt(self) -> str:
        """The prompt part of `text` (may be empty)."""
        return self.text[: self.prompt_chars]

    @property
    def completion(self) -> str:
        """The part of `text` the loss is computed on when prompts are masked."""
        return self.text[self.prompt_chars :]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that was skipped: its 1-based number, the reason, and a short human detail."""

    line: int
    reason: BadLineReason
    detail: str


def detect_format(record: object) -> RecordFormat:
    """Return the format of a parsed JSON record, judged by its keys; raise RecordError if none."""
    if not isinstance(record, Mapping):
        raise RecordError(
            BadLineReason.UNKNOWN_FORMAT, f"expected a JSON object, got {type(record).__name__}"
        )
    if "messages" in record:
        return RecordFormat.CHAT
    if "instruction" in record and "output" in record:
        return RecordFormat.ALPACA
    if "prompt" in record and "completion" in record:
        return RecordFormat.PROMPT_COMPLETION
    if "text" in record:
        return RecordFormat.TEXT
    keys = ", ".join(sorted(str(k) for k in record)[:8]) or "none"
    raise RecordError(
        BadLineReason.UNKNOWN_FORMAT,
        f"no known format matches the keys ({keys}); expected text, prompt+completion, "
        "instruction+input+output or messages",
    )


def render_record(record: object, fmt: RecordFormat | None = None) -> Example:
    """Render a parsed record to training text, detecting its format unless `fmt` is given."""
    fmt = fmt or detect_format(record)
    if not isinstance(record, Mapping):
        raise RecordError(BadLineReason.UNKNOWN_FORMAT, "expected a JSON object")
    match fmt:
        case RecordFormat.TEXT:
            example = Example(fmt, _string(record, "text"))
        case RecordFormat.PROMPT_COMPLETION:
            example = _render_prompt_completion(record)
        case RecordFormat.ALPACA:
            example = _render_alpaca(record)
        case RecordFormat.CHAT:
            example = _render_chat(record)
    if not example.completion.strip():
        raise RecordError(BadLineReason.EMPTY_TEXT, f"{fmt} record has no text to train on")
    return example


def parse_line(raw: bytes | str) -> Example:
    """Decode, parse and render one JSONL line; raise RecordError with the reason if it is bad."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"not valid UTF-8 at byte {exc.start}"
            raise RecordError(BadLineReason.NOT_JSON, detail) from exc
    if nests_deeper_than(raw, MAX_JSON_DEPTH):
        detail = f"the JSON nests deeper than {MAX_JSON_DEPTH} levels"
        raise RecordError(BadLineReason.TOO_DEEP, detail)
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        detail = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise RecordError(BadLineReason.NOT_JSON, detail) from exc
    except ValueError as exc:  # json.loads' other refusal: an integer past int_max_str_digits
        raise RecordError(BadLineReason.NOT_JSON, f"invalid JSON: {exc}") from exc
    return render_record(record)


_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest deeper than `limit` (brackets inside
    strings ignored).

    Linear and at C speed, so it can run before the parser (which recurses): a text with at
    most `limit` opening brackets cannot nest deeper and is answered from the count alone.
    Escapes are dropped first, so every string is then a plain `"..."` with no quote inside."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    return max(accumulate(map(_NESTING.__getitem__, brackets)), default=0) > limit


class DatasetReader:
    """Iterate `(line_number, Example)` over a JSONL or JSONL.gz stream, skipping bad lines.

    Gzip is recognised by its magic bytes, not the file name. Blank lines are ignored. Bad lines
    are counted in `bad_count` and the first `max_bad_lines` kept in `bad_lines`. Reading more than
    `max_bytes` of decompressed data raises DatasetTooLarge, however the stream is compressed;
    more than `max_lines` lines (blank ones included) DatasetTooManyLines.
    """

    def __init__(
        self,
        source: IO[bytes] | Path | str,
        *,
        max_bytes: int,
        max_lines: int | None = None,
        max_bad_lines: int = DEFAULT_MAX_BAD_LINES,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._source = source
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.max_bad_lines = max_bad_lines
        self.bad_lines: list[BadLine] = []
        self.bad_count = 0
        self.examples = 0
        self.bytes_read = 0
        self.compressed = False
        self.formats: Counter[RecordFormat] = Counter()

    @property
    def format(self) -> RecordFormat | Literal["mixed"] | None:
        """The single format of the good records seen so far, "mixed", or None if none yet."""
        if len(self.formats) > 1:
            return "mixed"
        return next(iter(self.formats), None)

    def __iter__(self) -> Iterator[tuple[int, Example]]:
        if isinstance(self._source, (str, Path)):
            with open(self._source, "rb") as raw:
                yield from self._iter_stream(raw)
        else:
            yield from self._iter_stream(self._source)

    def _iter_stream(self, raw: IO[bytes]) -> Iterator[tuple[int, Example]]:
        head, raw = _peek(raw, len(GZIP_MAGIC))
        self.compressed = head == GZIP_MAGIC
        stream: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if self.compressed else raw
        try:
            for line_no, line in enumerate(self._lines(stream), start=1):
                if self.max_lines is not None and line_no > self.max_lines:
                    raise DatasetTooManyLines(self.max_lines)
                if line is None:
                    self._record_bad(
                        line_no,
                        BadLineReason.LINE_TOO_LONG,
                        f"the line is longer than {MAX_LINE_BYTES} bytes",
                    )
                    continue
                if not line.strip():
                    continue
                try:
                    example = parse_line(line)
                except RecordError as exc:
                    self._record_bad(line_no, exc.reason, exc.detail)
                    continue
                self.examples += 1
                self.formats[example.format] += 1
                yield line_no, example
        except (OSError, EOFError, zlib.error) as exc:
            if not self.compressed:
                raise
            raise CorruptStream(f"corrupt gzip stream: {exc}") from exc

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

    def _record_bad(self, line_no: int, reason: BadLineReason, detail: str) -> None:
        self.bad_count += 1
        if len(self.bad_lines) < self.max_bad_lines:
            self.bad_lines.append(BadLine(line_no, reason, detail))


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


def _string(record: Mapping[str, object], key: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RecordError(
            BadLineReason.UNKNOWN_FORMAT,
            f"field {key!r} must be a string, got {type(value).__name__}",
        )
    return value


def _render_prompt_completion(record: Mapping[str, object]) -> Example:
    prompt = _string(record, "prompt")
    completion = _string(record, "completion")
    return Example(RecordFormat.PROMPT_COMPLETION, prompt + completion, len(prompt))


def _render_alpaca(record: Mapping[str, object]) -> Example:
    instruction = _string(record, "instruction")
    extra = _string(record, "input", required=False)
    output = _string(record, "output")
    prompt = ALPACA_INSTRUCTION + instruction
    if extra.strip():
        prompt += ALPACA_INPUT + extra
    prompt += ALPACA_RESPONSE
    return Example(RecordFormat.ALPACA, prompt + output, len(prompt))


def _render_chat(record: Mapping[str, object]) -> Example:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError(BadLineReason.UNKNOWN_FORMAT, "'messages' must be a non-empty list")
    if len(messages) > MAX_CHAT_MESSAGES:
        raise RecordError(
            BadLineReason.TOO_MANY_MESSAGES,
            f"'messages' has {len(messages)} messages; at most {MAX_CHAT_MESSAGES} are accepted",
        )
    parts: list[str] = []
    rendered = 0  # characters in `parts` so far: the prompt ends at a running total
    prompt_chars = 0
    any_content = False
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RecordError(BadLineReason.UNKNOWN_FORMAT, f"messages[{i}] must be an object")
        role = _string(message, "role")
        content = _string(message, "content")
        any_content = any_content or bool(content.strip())
        header = CHAT_TURN.format(role=role)
        if role == "assistant":
            # Everything before the last assistant reply is context: mask it when training.
            prompt_chars = rendered + len(header)
        part = header + content + CHAT_TURN_END
        parts.append(part)
        rendered += len(part)
    if not any_content:
        raise RecordError(BadLineReason.EMPTY_TEXT, "every message in 'messages' is empty")
    # Without an assistant turn prompt_chars stays 0: the whole conversation is trained on.
    return Example(RecordFormat.CHAT, "".join(parts), prompt_chars)
