"""`tunecost datasets upload|list|show|delete`: the datasets of the key's team on a tunecost
server."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.client import Api, KeyOption, UrlOption
from app.cli.tables import QuietOption, WideOption, console, fit_ids, id_table

datasets_app = typer.Typer(
    help="Upload, list, show and delete datasets (talks to the API).", no_args_is_help=True
)
UPLOAD_TIMEOUT_S = 600.0  # counting a 256 MiB upload's tokens takes minutes on a busy server


def _size(n_bytes: int) -> str:
    """A file size in binary units (KiB, MiB, GiB), as the console shows memory."""
    size, unit = float(n_bytes), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"


def _summary(ds: dict[str, Any]) -> str:
    stats = ds["stats"]
    return (
        f"{ds['num_examples']:,} examples ({ds['format']}), {ds['total_tokens']:,} tokens "
        f"(mean {stats['mean_tokens']:,.1f}, p95 {stats['p95_tokens']:,}, max "
        f"{ds['max_tokens']:,}), counted by {ds['tokenizer']}"
    )


def folder_tar(folder: Path, dest: Path) -> Path:
    """A `datasets` save_to_disk folder as one tar (names relative to it, sorted), to upload."""
    with tarfile.open(dest, "w") as tar:
        for member in sorted(folder.rglob("*")):
            if member.is_file() and not member.is_symlink():
                tar.add(member, arcname=member.relative_to(folder).as_posix(), recursive=False)
    return dest


@datasets_app.command("upload")
def upload(
    path: Annotated[
        Path, typer.Argument(exists=True, help="the dataset file, or a save_to_disk folder")
    ],
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    name: Annotated[str | None, typer.Option(help="default: the file's name")] = None,
    model_path: Annotated[
        str | None,
        typer.Option(help="a model folder under the server's model roots: its tokenizer counts"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="a catalog model: its tokenizer if cached, else its family's ratio"),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="the file's columns as fields: prompt=question,completion=answer"),
    ] = None,
    quiet: QuietOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON as it is")] = False,
) -> None:
    """Upload a dataset; the server checks every record and counts its tokens.

    Formats: JSON Lines, JSON arrays, CSV (gzip or zstd too), Parquet, Arrow, and a folder
    written by `datasets`' save_to_disk (sent as a tar).
    """
    given = {"name": name, "model_path": model_path, "model": model, "columns": columns}
    fields = {k: v for k, v in given.items() if v}
    api = Api(url=url, key=key, timeout=UPLOAD_TIMEOUT_S)
    with tempfile.TemporaryDirectory(prefix="tunecost-upload-") as tmp:
        if path.is_dir():
            fields.setdefault("name", path.resolve().name)
            path = folder_tar(path, Path(tmp) / f"{path.resolve().name}.tar")
        with path.open("rb") as fh:
            ds = api.request("POST", "/v1/datasets", files={"file": (path.name, fh)}, data=fields)
    body = ds.json()
    if quiet:
        typer.echo(body["id"])
    elif as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        console().print(f"dataset {body['id']}: {_summary(body)}")
        if body["stats"].get("tokenizer_note"):
            console().print(f"[yellow]{body['stats']['tokenizer_note']}[/yellow]")


@datasets_app.command("list")
def list_datasets(
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    wide: WideOption = False,
) -> None:
    """The team's datasets, newest first, with their ids whole."""
    page = Api(url=url, key=key).get("/v1/datasets", limit=limit)
    table = id_table(
        ("id", "name", "format", "examples", "tokens", "tokenizer", "created"), id_columns=("id",)
    )
    for ds in page["items"]:
        table.add_row(
            ds["id"],
            ds["name"],
            ds["format"],
            f"{ds['num_examples']:,}",
            f"{ds['total_tokens']:,}",
            ds["tokenizer"],
            ds["created_at"][:19].replace("T", " "),
        )
    console(wide=wide).print(fit_ids(table, id_columns=("id",)))


@datasets_app.command("show")
def show(
    dataset_id: Annotated[str, typer.Argument(help="the id, or a unique start of it")],
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON as it is")] = False,
) -> None:
    """One dataset: its formats, sizes and token statistics."""
    ds = Api(url=url, key=key).get(f"/v1/datasets/{dataset_id}")
    if as_json:
        typer.echo(json.dumps(ds, indent=2))
        return
    out = console()
    out.print(f"dataset {ds['id']} ({ds['name']})")
    out.print(_summary(ds))
    formats = ", ".join(f"{fmt} {n:,}" for fmt, n in ds["formats"].items())
    size = f"{_size(ds['size_bytes'])} uploaded, {_size(ds['uncompressed_bytes'])} read"
    out.print(f"formats: {formats}; {size}; stored as {ds['storage_path']}")
    if ds["stats"].get("tokenizer_note"):
        out.print(f"[yellow]{ds['stats']['tokenizer_note']}[/yellow]")


@datasets_app.command("delete")
def delete(
    dataset_id: Annotated[str, typer.Argument(help="the id, or a unique start of it")],
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before deleting")] = False,
) -> None:
    """Delete a dataset and its stored file (refused while an unfinished job trains on it)."""
    api = Api(url=url, key=key)
    ds = api.get(f"/v1/datasets/{dataset_id}")
    if not yes:
        typer.confirm(f"delete dataset {ds['id']} ({ds['name']})?", abort=True)
    gone = api.request("DELETE", f"/v1/datasets/{ds['id']}").json()
    console().print(f"deleted dataset {gone['id']} ({gone['name']}), {_size(gone['size_bytes'])}")
