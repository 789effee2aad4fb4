"""Format detection, rendering and bounded reading of JSONL datasets."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from app.datasets.formats import (
    MAX_CHAT_MESSAGES,
    MAX_JSON_DEPTH,
    BadLineReason,
    RecordError,
    RecordFormat,
    detect_format,
    nests_deeper_than,
    parse_line,
    render_record,
)
from app.datasets.reader import (
    CorruptStream,
    DatasetReader,
    DatasetTooLarge,
    DatasetTooManyLines,
    measure,
)

TEXT = {"text": "The river bends twice."}
PROMPT_COMPLETION = {"prompt": "Q: two plus two?\nA:", "completion": " four"}
ALPACA = {"instruction": "Translate to French.", "input": "cat", "output": "chat"}
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
}


def _jsonl(*lines: object) -> bytes:
    return "".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode()


def _lines(*records: object) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        (TEXT, RecordFormat.TEXT),
        (PROMPT_COMPLETION, RecordFormat.PROMPT_COMPLETION),
        (ALPACA, RecordFormat.ALPACA),
        ({"instruction": "Say hi.", "output": "hi"}, RecordFormat.ALPACA),
        (CHAT, RecordFormat.CHAT),
        ({**TEXT, "id": 7, "meta": {"source": "x"}}, RecordFormat.TEXT),
    ],
)
def test_detect_format(record: dict[str, object], fmt: RecordFormat) -> None:
    assert detect_format(record) is fmt


@pytest.mark.parametrize("record", [{"foo": 1}, [1, 2], "text", {}, {"prompt": "only"}])
def test_detect_format_rejects_unknown(record: object) -> None:
    with pytest.raises(RecordError) as err:
        detect_format(record)
    assert err.value.reason is BadLineReason.UNKNOWN_FORMAT


def test_render_text_trains_on_everything() -> None:
    ex = render_record(TEXT)
    assert ex.text == TEXT["text"]
    assert ex.prompt == "" and ex.completion == ex.text


def test_render_prompt_completion_splits_at_the_prompt() -> None:
    ex = render_record(PROMPT_COMPLETION)
    assert ex.text == "Q: two plus two?\nA: four"
    assert ex.prompt == PROMPT_COMPLETION["prompt"]
    assert ex.completion == " four"


def test_render_alpaca_with_and_without_input() -> None:
    with_input = render_record(ALPACA)
    assert "Translate to French." in with_input.prompt and "cat" in with_input.prompt
    assert with_input.completion == "chat"
    without = render_record({"instruction": "Translate to French.", "input": "", "output": "chat"})
    assert "cat" not in without.text
    assert len(without.text) < len(with_input.text)
    assert without.completion == "chat"


def test_render_chat_masks_all_but_the_last_assistant_reply() -> None:
    ex = render_record(CHAT)
    assert ex.completion.strip() == "Hello."
    assert "Be brief." in ex.prompt and "Hi?" in ex.prompt
    assert ex.prompt.endswith("<|assistant|>\n")


def test_render_chat_without_assistant_trains_on_everything() -> None:
    ex = render_record({"messages": [{"role": "user", "content": "just notes"}]})
    assert ex.prompt == "" and "just notes" in ex.completion


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "   \n"}, BadLineReason.EMPTY_TEXT),
        ({"prompt": "Q?", "completion": ""}, BadLineReason.EMPTY_TEXT),
        ({"instruction": "x", "output": " "}, BadLineReason.EMPTY_TEXT),
        ({"messages": [{"role": "user", "content": ""}]}, BadLineReason.EMPTY_TEXT),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            BadLineReason.EMPTY_TEXT,
        ),
        ({"text": 5}, BadLineReason.UNKNOWN_FORMAT),
        ({"messages": []}, BadLineReason.UNKNOWN_FORMAT),
        ({"messages": ["hi"]}, BadLineReason.UNKNOWN_FORMAT),
        ({"messages": [{"role": "user"}]}, BadLineReason.UNKNOWN_FORMAT),
    ],
)
def test_render_rejects_bad_records(record: object, reason: BadLineReason) -> None:
    with pytest.raises(RecordError) as err:
        render_record(record)
    assert err.value.reason is reason


def test_parse_line_not_json_and_not_utf8() -> None:
    with pytest.raises(RecordError) as err:
        parse_line(b'{"text": "unterminated')
    assert err.value.reason is BadLineReason.NOT_JSON
    with pytest.raises(RecordError) as err:
        parse_line(b'{"text": "\xff\xfe"}')
    assert err.value.reason is BadLineReason.NOT_JSON and "UTF-8" in err.value.detail


def test_reader_yields_line_numbers_and_collects_bad_lines() -> None:
    data = _lines(TEXT, b"not json", b"", {"foo": 1}, {"text": ""}, TEXT)
    reader = DatasetReader(io.BytesIO(data), max_bytes=10_000)
    got = list(reader)
    assert [n for n, _ in got] == [1, 6]
    assert [(b.line, b.reason) for b in reader.bad_lines] == [
        (2, BadLineReason.NOT_JSON),
        (4, BadLineReason.UNKNOWN_FORMAT),
        (5, BadLineReason.EMPTY_TEXT),
    ]
    assert reader.bad_count == 3 and reader.examples == 2
    assert reader.format is RecordFormat.TEXT
    assert reader.bytes_read == len(data)


def test_reader_keeps_only_the_first_bad_lines_but_counts_all() -> None:
    data = _lines(*([b"{"] * 30), TEXT)
    reader = DatasetReader(io.BytesIO(data), max_bytes=10_000, max_bad_lines=5)
    assert len(list(reader)) == 1
    assert [b.line for b in reader.bad_lines] == [1, 2, 3, 4, 5]
    assert reader.bad_count == 30


def test_reader_reports_mixed_formats() -> None:
    reader = DatasetReader(io.BytesIO(_lines(TEXT, ALPACA, ALPACA)), max_bytes=10_000)
    list(reader)
    assert reader.format == "mixed"
    assert reader.formats == {RecordFormat.TEXT: 1, RecordFormat.ALPACA: 2}


def test_reader_last_line_without_newline() -> None:
    reader = DatasetReader(io.BytesIO(_jsonl(TEXT, "\n", CHAT)), max_bytes=10_000)
    assert [ex.format for _, ex in reader] == [RecordFormat.TEXT, RecordFormat.CHAT]


def test_reader_gzip_by_magic_bytes_from_a_path(tmp_path: Path) -> None:
    plain = _lines(*([ALPACA] * 50))
    path = tmp_path / "data.bin"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(plain))
    reader = DatasetReader(path, max_bytes=len(plain))
    assert len(list(reader)) == 50
    assert reader.compressed and reader.bytes_read == len(plain)


def test_reader_stops_a_gzip_bomb_at_the_decompressed_limit() -> None:
    # ~50 MB of newline-free zeros compress to ~50 kB; the reader must stop at the limit.
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 200_000
    reader = DatasetReader(io.BytesIO(bomb), max_bytes=1_000_000)
    with pytest.raises(DatasetTooLarge) as err:
        list(reader)
    assert err.value.max_bytes == 1_000_000
    assert reader.bytes_read <= 1_000_001


def test_reader_plain_file_over_the_limit() -> None:
    data = _lines(*([TEXT] * 100))
    with pytest.raises(DatasetTooLarge):
        list(DatasetReader(io.BytesIO(data), max_bytes=len(data) - 1))
    assert len(list(DatasetReader(io.BytesIO(data), max_bytes=len(data)))) == 100


def test_reader_truncated_gzip_is_a_corrupt_stream() -> None:
    whole = gzip.compress(_lines(*([TEXT] * 200)))
    with pytest.raises(CorruptStream):
        list(DatasetReader(io.BytesIO(whole[: len(whole) // 2]), max_bytes=1_000_000))


class _ForwardOnly(io.RawIOBase):
    """A raw stream that cannot seek or peek, like a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # io hands a memoryview; typeshed declares any writable buffer
        return self._data.readinto(buffer)


def test_reader_forward_only_stream() -> None:
    data = gzip.compress(_lines(TEXT, PROMPT_COMPLETION))
    reader = DatasetReader(_ForwardOnly(data), max_bytes=10_000)  # type: ignore[arg-type]  # a RawIOBase, not typed as IO[bytes]; the reader only reads it
    assert [ex.format for _, ex in reader] == [RecordFormat.TEXT, RecordFormat.PROMPT_COMPLETION]
    assert reader.compressed


def test_chat_prompt_ends_before_the_last_reply_and_the_cap_holds() -> None:
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * 3
    ex = render_record({"messages": turns})
    assert ex.completion == "a\n" and ex.prompt.endswith("<|assistant|>\n")
    at_cap = [{"role": "user", "content": "q"}] * MAX_CHAT_MESSAGES
    assert render_record({"messages": at_cap}).text.count("<|user|>") == MAX_CHAT_MESSAGES
    with pytest.raises(RecordError) as err:
        render_record({"messages": [*at_cap, {"role": "assistant", "content": "a"}]})
    assert err.value.reason is BadLineReason.TOO_MANY_MESSAGES


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
        ("[" * (MAX_JSON_DEPTH + 1), True),  # unterminated: the parser would recurse all the same
        (json.dumps({"text": "[" * 500}), False),  # brackets in a string are text
        (json.dumps({"text": '\\"[' * 500}), False),  # ... escaped quotes and all
        (json.dumps({"a": [{"b": []}] * 500}), False),  # wide, not deep
    ],
)
def test_nesting_is_measured_outside_strings(text: str, deeper: bool) -> None:
    assert nests_deeper_than(text, MAX_JSON_DEPTH) is deeper


def test_parse_line_refuses_deep_json_and_giant_integers_as_bad_lines() -> None:
    with pytest.raises(RecordError) as err:
        parse_line('{"text": "x", "m": ' + "[" * 5000 + "]" * 5000 + "}")
    assert err.value.reason is BadLineReason.TOO_DEEP
    with pytest.raises(RecordError) as err:
        parse_line('{"text": "x", "n": ' + "9" * 5000 + "}")
    assert err.value.reason is BadLineReason.NOT_JSON


def test_measure_counts_lines_and_bytes_and_stops_at_a_cap(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(_lines(*([TEXT] * 99)) + json.dumps(TEXT).encode()))
    size = measure(path, max_bytes=1_000_000, max_lines=100)
    assert (size.compressed, size.lines) == (True, 100)
    assert size.bytes == len(_lines(*([TEXT] * 100))) - 1
    with pytest.raises(DatasetTooManyLines):
        measure(path, max_bytes=1_000_000, max_lines=99)
    with pytest.raises(DatasetTooLarge):
        measure(path, max_bytes=size.bytes - 1, max_lines=100)
    with pytest.raises(DatasetTooManyLines):
        list(DatasetReader(path, max_bytes=1_000_000, max_lines=99))
