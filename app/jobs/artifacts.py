"""A job's artifact folder under the storage root, streamed as a tar or zip archive.

The archive is built while it is sent, a chunk at a time, so memory does not grow with the size
of the checkpoint: tar headers are written by hand around each file's bytes; zip goes through
`zipfile` on a write-only sink (it writes data descriptors when it cannot seek).
"""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from collections.abc import Iterator
from typing import Any

from fsspec.core import url_to_fs

from app.config import get_settings

CHUNK_BYTES = 1024 * 1024  # read and send a megabyte at a time
TAR_BLOCK = 512  # POSIX tar record unit
TAR_END = b"\0" * (2 * TAR_BLOCK)  # two zero blocks close an archive
MEDIA_TYPES = {"tar": "application/x-tar", "zip": "application/zip"}


def artifact_key(job_id: str) -> str:
    """The folder, relative to the storage root, that holds a job's artifact."""
    return f"artifacts/{job_id}"


def artifact_url(job_id: str) -> str:
    """The URL of a job's artifact folder under the configured storage root."""
    fs, root = url_to_fs(get_settings().storage_root)
    return str(fs.unstrip_protocol(f"{root.rstrip('/')}/{artifact_key(job_id)}"))


def list_files(url: str) -> tuple[Any, list[tuple[str, str, int]]]:
    """(fs, [(stored path, name inside the archive, size)]) of every file under `url`."""
    fs, root = url_to_fs(url)
    root = root.rstrip("/")
    found = fs.find(root, detail=True)
    files = sorted(
        (path, path[len(root) + 1 :], int(info["size"]))
        for path, info in found.items()
        if info.get("type") == "file"
    )
    return fs, files


def _chunks(fs: Any, path: str) -> Iterator[bytes]:
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


def stream_tar(url: str, *, prefix: str) -> Iterator[bytes]:
    """The folder at `url` as an uncompressed tar whose entries sit under `prefix/`."""
    fs, files = list_files(url)
    now = int(time.time())
    for path, name, size in files:
        info = tarfile.TarInfo(f"{prefix}/{name}")
        info.size, info.mtime, info.mode = size, now, 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        for chunk in _chunks(fs, path):
            chunk = chunk[: size - sent]  # never more than the header promised
            sent += len(chunk)
            yield chunk
        if sent != size:
            raise OSError(f"{name} changed size while being archived ({size} -> {sent} bytes)")
        if size % TAR_BLOCK:
            yield b"\0" * (TAR_BLOCK - size % TAR_BLOCK)
    yield TAR_END


class _Sink(io.RawIOBase):
    """A write-only stream whose written bytes are collected and taken out in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def stream_zip(url: str, *, prefix: str) -> Iterator[bytes]:
    """The folder at `url` as a deflated zip whose entries sit under `prefix/`."""
    fs, files = list_files(url)
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name, _size in files:
            with archive.open(f"{prefix}/{name}", mode="w", force_zip64=True) as entry:
                for chunk in _chunks(fs, path):
                    entry.write(chunk)
                    if piece := sink.take():
                        yield piece
            if piece := sink.take():
                yield piece
    yield sink.take()
