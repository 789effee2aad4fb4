"""`tunecost make-tiny-model` and `make-tiny-dataset`: offline fixtures for the demo and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.datasets.formats import RecordFormat
from devtools import tinymodel


def make_tiny_model(
    dest: Annotated[Path, typer.Argument(help="folder to write the model and tokenizer into")],
    vocab_size: Annotated[int, typer.Option(min=260, max=32000)] = 512,
    hidden_size: Annotated[int, typer.Option(min=8, max=1024)] = 64,
    layers: Annotated[int, typer.Option(min=1, max=16)] = 2,
    chat_template: Annotated[
        bool, typer.Option(help="give the tokenizer a chat template, as instruct models have")
    ] = False,
) -> None:
    """Write a tiny random-weight Llama and its trained tokenizer (nothing is downloaded)."""
    made = tinymodel.make_tiny_model(
        dest,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        layers=layers,
        chat_template=chat_template,
    )
    typer.echo(str(made))


def make_tiny_dataset(
    dest: Annotated[Path, typer.Argument(help="JSONL file to write (.jsonl.gz to gzip it)")],
    n: Annotated[int, typer.Option(min=1, max=1_000_000, help="number of records")] = 200,
    record_format: Annotated[
        RecordFormat, typer.Option("--format", help="record format")
    ] = RecordFormat.ALPACA,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a small JSONL dataset in one of the recognised record formats."""
    typer.echo(str(tinymodel.make_tiny_dataset(dest, n=n, fmt=record_format, seed=seed)))
