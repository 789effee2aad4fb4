"""Stream a multipart upload straight to a local temporary file, hashing and counting as it goes.

Starlette's form parser spools the whole body before a handler runs; here the file part is
written chunk by chunk while the request arrives, and the upload is refused (413) as soon as it
passes the configured limit, before the rest is read. Small form fields are kept in memory with
a hard cap each.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from app.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096  # every non-file form field (name, model_path) is a short string
MAX_FIELDS = 16


@dataclass
class ReceivedUpload:
    """The uploaded file, now in a local temporary file, and the form's text fields."""

    path: Path
    filename: str
    size_bytes: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the temporary file."""
        self.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks that route the file part to disk and fields to memory."""

    def __init__(self, out: IO[bytes], max_bytes: int) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_name = ""
        self._is_file = False
        self._buffer = bytearray()
        self._seen_file = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _part_begin(self) -> None:
        self._disposition, self._is_file, self._buffer = b"", False, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise InvalidInput("a multipart part has no name in its Content-Disposition")
        self._part_name = name.decode("utf-8", "replace")
        if self._part_name == FILE_FIELD:
            if self._seen_file:
                raise InvalidInput("send exactly one 'file' part", field=FILE_FIELD)
            self._seen_file = self._is_file = True
            raw_name = options.get(b"filename", b"upload.jsonl")
            self.filename = os.path.basename(raw_name.decode("utf-8", "replace")) or "upload.jsonl"
        elif len(self.fields) >= MAX_FIELDS:
            raise InvalidInput(f"at most {MAX_FIELDS} form fields are accepted")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(
                    f"the dataset exceeds {self.max_bytes} bytes (TUNECOST_MAX_UPLOAD_BYTES); "
                    "split it or compress it with gzip"
                )
            self.digest.update(chunk)
            self.out.write(chunk)
        else:
            if len(self._buffer) + len(chunk) > MAX_FIELD_BYTES:
                raise InvalidInput(
                    f"form field {self._part_name!r} is longer than {MAX_FIELD_BYTES} bytes",
                    field=self._part_name,
                )
            self._buffer.extend(chunk)

    def _part_end(self) -> None:
        if not self._is_file:
            try:
                value = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"form field {self._part_name!r} is not UTF-8", field=self._part_name
                ) from None
            if "\x00" in value:
                raise InvalidInput(
                    f"form field {self._part_name!r} holds a NUL character (U+0000)",
                    field=self._part_name,
                )
            self.fields[self._part_name] = value


async def receive_upload(
    *, content_type: str, stream: AsyncIterator[bytes], max_bytes: int, tmp_dir: Path | None = None
) -> ReceivedUpload:
    """Read a multipart/form-data body with one `file` part into a temporary file.

    Raises PayloadTooLarge past `max_bytes` of file data and InvalidInput for a malformed body;
    the temporary file is deleted in both cases.
    """
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidInput(
            "upload the dataset as multipart/form-data with a 'file' part", field=FILE_FIELD
        )
    fd, name = tempfile.mkstemp(prefix="tunecost-upload-", suffix=".part", dir=tmp_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            receiver = _Receiver(out, max_bytes)
            parser = MultipartParser(params[b"boundary"], receiver.callbacks())
            async for chunk in stream:
                parser.write(chunk)
            parser.finalize()
    except FormParserError as exc:
        path.unlink(missing_ok=True)
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if receiver.filename is None:
        path.unlink(missing_ok=True)
        raise InvalidInput("the form has no 'file' part with the dataset", field=FILE_FIELD)
    return ReceivedUpload(
        path=path,
        filename=receiver.filename,
        size_bytes=receiver.size,
        sha256=receiver.digest.hexdigest(),
        fields=receiver.fields,
    )
