"""Fine-tuning records: detect each record's shape, map its columns, and render it to training
text with the part the loss skips (the prompt) marked.

Pure functions; no I/O, no HTTP, no tokenizer. The containers records come in are read by
`app.datasets.sources`, the file as a whole by `app.datasets.reader`. Chat records keep their
messages so that a caller holding the model's tokenizer renders them with its chat template
(`ChatRenderer`); without one they get the plain delimiters below (`render_chat_plain`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate

# Plain delimiters, not a model's chat template: the same text for every model, so token counts
# are comparable across models. The model's own template is applied instead where it has one.
ALPACA_INSTRUCTION = "### Instruction:\n"
ALPACA_INPUT = "\n\n### Input:\n"
ALPACA_RESPONSE = "\n\n### Response:\n"
CHAT_TURN = "<|{role}|>\n"
CHAT_TURN_END = "\n"


class RecordFormat(StrEnum):
    """The record shapes tunecost recognises."""

    TEXT = "text"  # {"text"}
    PROMPT_COMPLETION = "prompt_completion"  # {"prompt", "completion"}
    ALPACA = "alpaca"  # {"instruction", "input"?, "output"}
    CHAT = "chat"  # {"messages": [{"role", "content"}, ...]}
    SHAREGPT = "sharegpt"  # {"conversations": [{"from", "value"}, ...], "system"?}


CHAT_FORMATS = (RecordFormat.CHAT, RecordFormat.SHAREGPT)


class BadLineReason(StrEnum):
    """Why a row cannot be used for training."""

    NOT_JSON = "not_json"
    UNKNOWN_FORMAT = "unknown_format"
    EMPTY_TEXT = "empty_text"
    LINE_TOO_LONG = "line_too_long"
    TOO_DEEP = "too_deep"
    TOO_MANY_MESSAGES = "too_many_messages"


# Nesting of a record's JSON: every known format needs 3 levels (record, messages, message);
# 64 leaves room for metadata fields and keeps the parser far from Python's recursion limit
# (1000), which a deeper line would otherwise hit as a RecursionError.
MAX_JSON_DEPTH = 64
# Messages in one chat record. A turn costs at least its role header and line end (~4 tokens),
# so the longest context of any catalog model (131,072 tokens) holds at most ~32k of them; real
# multi-turn data has tens. 4096 refuses only records that are not conversations.
MAX_CHAT_MESSAGES = 4096


# ShareGPT's speaker names (FastChat, Axolotl, LLaMA-Factory) and the roles they mean; OpenAI
# role names map to themselves, so a list may use either spelling.
ROLE_NAMES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
    "function_response": "tool",
    "observation": "tool",
}
# The field names `columns` may map a file's columns onto.
RECORD_FIELDS = (
    "text",
    "prompt",
    "completion",
    "instruction",
    "input",
    "output",
    "messages",
    "conversations",
    "system",
)


class RecordError(ValueError):
    """A record that is valid JSON but cannot be rendered; `reason` says which kind of problem."""

    def __init__(self, reason: BadLineReason, detail: str, hint: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.hint = hint


Message = tuple[str, str]  # (role, content), roles as ROLE_NAMES's values
# Renders messages with a model's chat template: (text, characters of its prompt part), or None
# when the template cannot render these messages as a prompt followed by the last reply.
ChatRenderer = Callable[[Sequence[Message]], tuple[str, int] | None]


@dataclass(frozen=True, slots=True)
class Example:
    """One rendered training example.

    `text` is what the model trains on; `text[:prompt_chars]` is the prompt part, whose tokens a
    trainer may mask out of the loss (0 for plain text: everything is trained on). `templated`:
    rendered by the model's chat template, whose text carries its own special tokens (BOS...),
    so a tokenizer must not add them again.
    """

    format: RecordFormat
    text: str
    prompt_chars: int = 0
    templated: bool = False

    @property
    def prompt(self) -> str:
        """The prompt part of `text` (may be empty)."""
        return self.text[: self.prompt_chars]

    @property
    def completion(self) -> str:
        """The part of `text` the loss is computed on when prompts are masked."""
        return self.text[self.prompt_chars :]


def parse_columns(spec: str) -> dict[str, str]:
    """`prompt=question,completion=answer` -> {"question": "prompt", "answer": "completion"}.

    Raises ValueError naming the first pair that is not `<field>=<column>` with a known field.
    """
    mapping: dict[str, str] = {}
    for pair in (p.strip() for p in spec.split(",")):
        if not pair:
            continue
        ours, sep, theirs = (x.strip() for x in pair.partition("="))
        if not sep or not ours or not theirs:
            raise ValueError(f"{pair!r} is not <field>=<column>")
        if ours not in RECORD_FIELDS:
            raise ValueError(f"{ours!r} is not a field; the fields are {', '.join(RECORD_FIELDS)}")
        if theirs in mapping:
            raise ValueError(f"column {theirs!r} is mapped twice")
        mapping[theirs] = ours
    return mapping


def apply_columns(record: object, columns: Mapping[str, str] | None) -> object:
    """The record with its columns renamed to tunecost's fields (theirs -> ours)."""
    if not columns or not isinstance(record, Mapping):
        return record
    return {columns.get(str(k), str(k)): v for k, v in record.items()}


def detect_format(record: object) -> RecordFormat:
    """Return the format of a parsed record, judged by its keys; raise RecordError if none."""
    if not isinstance(record, Mapping):
        raise RecordError(
            BadLineReason.UNKNOWN_FORMAT,
            f"expected an object with named fields, got {type(record).__name__}",
            'each row is one object such as {"text": ...} or {"messages": [...]}',
        )
    if "messages" in record:
        return RecordFormat.CHAT
    if "conversations" in record:
        return RecordFormat.SHAREGPT
    if "instruction" in record and "output" in record:
        return RecordFormat.ALPACA
    if "prompt" in record and "completion" in record:
        return RecordFormat.PROMPT_COMPLETION
    if "text" in record:
        return RecordFormat.TEXT
    keys = sorted(str(k) for k in record)
    shown = ", ".join(keys[:8]) or "none"
    raise RecordError(
        BadLineReason.UNKNOWN_FORMAT,
        f"no known format matches the fields ({shown}); expected text, prompt+completion, "
        "instruction+output, messages or conversations",
        _hint(keys),
    )


def _hint(keys: Sequence[str]) -> str:
    lowered = {k.lower(): k for k in keys}
    if "instruction" in lowered:
        return "looks like Alpaca without 'output'; or map a column: columns=output=<column>"
    if "prompt" in lowered:
        return (
            "looks like prompt/completion without 'completion'; or map a column: "
            "columns=completion=<column>"
        )
    pairs = (
        ("question", "answer"),
        ("query", "response"),
        ("input", "output"),
        ("input", "target"),
    )
    for first, second in pairs:
        if first in lowered and second in lowered:
            return (
                f"map the columns: upload with columns=prompt={lowered[first]},"
                f"completion={lowered[second]}"
            )
    for key in keys:
        if key.lower() in ("dialog", "dialogue", "conversation", "chat", "turns"):
            return f"looks like a conversation: upload with columns=conversations={key}"
    return "name the fields with the 'columns' form field, e.g. columns=text=<column>"


def render_record(
    record: object, fmt: RecordFormat | None = None, *, chat: ChatRenderer | None = None
) -> Example:
    """Render a parsed record to training text, detecting its format unless `fmt` is given.

    Chat records go through `chat` (the model's template) when given, else the plain delimiters.
    """
    fmt = fmt or detect_format(record)
    if not isinstance(record, Mapping):
        raise RecordError(BadLineReason.UNKNOWN_FORMAT, "expected an object with named fields")
    match fmt:
        case RecordFormat.TEXT:
            example = Example(fmt, _string(record, "text"))
        case RecordFormat.PROMPT_COMPLETION:
            example = _render_prompt_completion(record)
        case RecordFormat.ALPACA:
            example = _render_alpaca(record)
        case RecordFormat.CHAT | RecordFormat.SHAREGPT:
            example = _render_chat(fmt, chat_messages(record, fmt), chat)
    if not example.completion.strip():
        raise RecordError(BadLineReason.EMPTY_TEXT, f"{fmt} record has no text to train on")
    return example


def parse_json(raw: bytes | str) -> object:
    """One JSON document (a JSONL line, a CSV cell); RecordError not_json if it is not valid
    UTF-8 JSON, too_deep past MAX_JSON_DEPTH levels (checked before the recursive parser)."""
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
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        detail = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise RecordError(BadLineReason.NOT_JSON, detail) from exc
    except ValueError as exc:  # json.loads' other refusal: an integer past int_max_str_digits
        raise RecordError(BadLineReason.NOT_JSON, f"invalid JSON: {exc}") from exc


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


def parse_line(raw: bytes | str, *, chat: ChatRenderer | None = None) -> Example:
    """Decode, parse and render one JSONL line; raise RecordError with the reason if it is bad."""
    return render_record(parse_json(raw), chat=chat)


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


def chat_messages(record: Mapping[str, object], fmt: RecordFormat) -> list[Message]:
    """The (role, content) turns of a chat or ShareGPT record, roles mapped to ROLE_NAMES.

    Either list may use OpenAI's `role`/`content` or ShareGPT's `from`/`value` per turn; a
    ShareGPT `system` field becomes the first turn. A CSV cell may hold the list as JSON text.
    """
    key = "messages" if fmt is RecordFormat.CHAT else "conversations"
    turns = record.get(key)
    if isinstance(turns, str):
        turns = parse_json(turns)
    if not isinstance(turns, list) or not turns:
        raise RecordError(BadLineReason.UNKNOWN_FORMAT, f"{key!r} must be a non-empty list")
    if len(turns) > MAX_CHAT_MESSAGES:
        raise RecordError(
            BadLineReason.TOO_MANY_MESSAGES,
            f"{key!r} has {len(turns)} messages; at most {MAX_CHAT_MESSAGES} are accepted",
        )
    messages: list[Message] = []
    system = record.get("system")
    if fmt is RecordFormat.SHAREGPT and isinstance(system, str) and system.strip():
        messages.append(("system", system))
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordError(BadLineReason.UNKNOWN_FORMAT, f"{key}[{i}] must be an object")
        speaker_key, text_key = ("role", "content") if "role" in turn else ("from", "value")
        speaker = turn.get(speaker_key)
        role = ROLE_NAMES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            known = ", ".join(sorted(ROLE_NAMES))
            raise RecordError(
                BadLineReason.UNKNOWN_FORMAT,
                f"{key}[{i}] has {speaker_key} {speaker!r}; the known speakers are {known}",
            )
        messages.append((role, _string(turn, text_key)))
    return messages


def last_reply(messages: Sequence[Message]) -> int | None:
    """Index of the last assistant turn: what the loss is taken on (None: train on it all)."""
    return next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i][0] == "assistant"), None
    )


def render_chat_plain(messages: Sequence[Message]) -> tuple[str, int]:
    """The plain rendering: `<|role|>` turns; the prompt is everything before the last reply.

    Linear in the conversation's length: each turn is rendered once.
    """
    reply = last_reply(messages)
    parts: list[str] = []
    done = prompt_chars = 0
    for i, (role, content) in enumerate(messages):
        header = CHAT_TURN.format(role=role)
        if i == reply:
            prompt_chars = done + len(header)
        part = header + content + CHAT_TURN_END
        parts.append(part)
        done += len(part)
    # Without an assistant turn prompt_chars stays 0: the whole conversation is trained on.
    return "".join(parts), prompt_chars


def _render_chat(
    fmt: RecordFormat, messages: Sequence[Message], chat: ChatRenderer | None
) -> Example:
    if not any(content.strip() for _, content in messages):
        raise RecordError(BadLineReason.EMPTY_TEXT, "every message of the conversation is empty")
    rendered = chat(messages) if chat is not None else None
    if rendered is not None:
        return Example(fmt, rendered[0], rendered[1], templated=True)
    text, prompt_chars = render_chat_plain(messages)
    return Example(fmt, text, prompt_chars)
