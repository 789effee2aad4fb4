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


class DatasetOut(BaseModel):
    """A stored dataset and its token statistics."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: str = Field(description="text, prompt_completion, alpaca, chat, or mixed")
    formats: dict[str, int] = Field(description="examples per record format")
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
