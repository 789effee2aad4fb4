"""`tunecost prices refresh`: import a provider price list into a new catalog version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.catalog.prices.fetch import FETCHERS
from app.catalog.prices.importers import PARSERS, PriceImportError
from app.catalog.prices.refresh import import_document, refresh_all

prices_app = typer.Typer(
    help="Provider price lists (talks to the database directly).", no_args_is_help=True
)


@prices_app.command("refresh")
def refresh(
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="a saved price-list document (JSON); else fetch it"),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help=f"one of {', '.join(sorted(PARSERS))}; detected from a file's shape"),
    ] = None,
) -> None:
    """Import each provider's price list (or one file) as a new catalog version."""
    if from_file is not None:
        _import_one(_read(from_file), provider=provider, source=from_file.name)
        return
    if provider is not None and provider not in FETCHERS:
        typer.echo(f"no importer for {provider!r}; known: {sorted(FETCHERS)}", err=True)
        raise typer.Exit(2)
    outcome = refresh_all([provider] if provider else None)
    for name, said in outcome.items():
        typer.echo(f"{name}: {said}", err=not said.startswith("imported"))
    if not all(said.startswith("imported") for said in outcome.values()):
        raise typer.Exit(1)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        typer.echo(f"{path}: not imported, nothing changed: {exc}", err=True)
        raise typer.Exit(1) from None


def _import_one(doc: Any, *, provider: str | None, source: str) -> None:
    try:
        said = import_document(doc, provider=provider, source=source, imported_by="cli")
    except PriceImportError as exc:
        typer.echo(f"{source}: not imported, nothing changed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(said)
