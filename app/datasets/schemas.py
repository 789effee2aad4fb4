"""Response bodies of the dataset routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.kit.instants import UtcInstant


class TokenStatsOut(BaseModel):
    """Tokens per example, counted as `tokenizer` says."""

    examples: int
    total_tokens: int
    mean_tokens: float
    p50_tokens: int
    p95_tokens: int
    max_tokens: int
    min_tokens: int
    tokenizer: str = Field(
        description="'approximate' (characters / 4) or the model folder whose tokenizer counted"
    )
    tokenizer_note: str | None = None
    token_error: float = Field(
        0.0,
        description="how far an approximate count may be off (relative); 0 for a real tokenizer",
    )


class DatasetOut(BaseModel):
    """A stored dataset and its token statistics."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: str = Field(description="text, prompt_completion, alpaca, chat, sharegpt, or mixed")
    formats: dict[str, int] = Field(description="examples per record format")
    container: str = Field(description="jsonl, json, csv, parquet, arrow or hf_disk")
    compression: str = Field(description="none, gzip or zstd")
    columns: dict[str, str] | None = Field(
        description="the file's columns renamed to record fields ({column: field}), if given"
    )
    chat_template: dict[str, int] | None = Field(
        description="conversations rendered by the model's chat template (model_template) and "
        "with the plain <|role|> delimiters (plain: no template, or it could not mark the prompt)"
    )
    compressed: bool
    size_bytes: int = Field(description="bytes as uploaded (compressed when gzipped)")
    uncompressed_bytes: int
    sha256: str
    num_examples: int
    total_tokens: int
    max_tokens: int
    tokenizer: str
    stats: TokenStatsOut
    storage_path: str
    team: str | None
    created_at: UtcInstant


class BadLineOut(BaseModel):
    """One line of a rejected upload: its 1-based number and why it cannot be used."""

    line: int
    reason: str
    detail: str


class ProblemOut(BaseModel):
    """One kind of problem in a rejected upload: how many rows, the first few, what and a fix."""

    kind: str = Field(description="not_json, unknown_format, empty_text or line_too_long")
    count: int
    rows: list[int] = Field(description="the first rows (lines, elements) with it, 1-based")
    detail: str = Field(description="what is wrong with the first of them")
    hint: str | None = Field(None, description="what the rows look like and how to upload them")
