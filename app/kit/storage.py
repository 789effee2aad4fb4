"""Files under the storage root (any fsspec URL): put a local file, remove it, open it again.

Stored paths are full URLs (`file:///...`, `s3://bucket/...`) so that the API, the workers and
the CLI open them with `fsspec.open(url)` whatever the root was when they were written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from app.config import get_settings


def _root() -> tuple[Any, str]:
    fs, root = url_to_fs(get_settings().storage_root)
    return fs, root.rstrip("/")


def put_file(local: Path, key: str) -> str:
    """Copy `local` to `<storage root>/<key>`; returns the stored file's URL."""
    fs, root = _root()
    dest = f"{root}/{key.lstrip('/')}"
    fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), dest)
    return str(fs.unstrip_protocol(dest))


def remove(url: str) -> None:
    """Delete a stored file (and its folder when that is left empty); missing is not an error."""
    fs, path = url_to_fs(url)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        return
    parent = path.rsplit("/", 1)[0]
    try:
        if fs.isdir(parent) and not fs.ls(parent):
            fs.rmdir(parent)
    except OSError:
        pass  # someone else wrote there meanwhile, or the store has no real folders


def open_file(url: str, mode: str = "rb") -> Any:
    """Open a stored file by URL (a context manager yielding a file object)."""
    return fsspec.open(url, mode)
