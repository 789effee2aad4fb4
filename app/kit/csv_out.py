"""The one CSV writer of the API: every route that answers text/csv writes through it.

Spreadsheets run a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
formula (CSV injection). Following OWASP's rule (cheatsheetseries.owasp.org, "CSV Injection"),
such a text cell is written with a leading single quote, which spreadsheets show as text and
never evaluate. Numbers are left alone: a float or int is never a formula, and neither is text
that is a plain signed number (`-3.5`), which a spreadsheet reads as that number.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from fastapi.responses import Response

from app.kit.streams import ClosingStreamingResponse

CSV_MEDIA = "text/csv; charset=utf-8"
# OWASP CSV injection: the characters a spreadsheet takes as the start of a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_CHARS = frozenset(FORMULA_PREFIXES)
NEUTRALISER = "'"  # OWASP's recommended prefix: shown as text, never evaluated
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise(value: Any) -> Any:
    """A cell value safe for spreadsheets: None → empty, formula-like text → quoted text."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        if value[0] in "+-" and _NUMBER.fullmatch(value):
            return value
        return NEUTRALISER + value
    return value


def chunks(header: Sequence[str], batches: Iterable[Iterable[Sequence[Any]]]) -> Iterator[str]:
    """CSV text: the header, then one chunk per batch of rows (each a sequence of cells)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([neutralise(name) for name in header])
    yield buffer.getvalue()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        # neutralise() only on text starting with a formula character: the test runs inline
        # because this loop visits every cell of every export.
        writer.writerows(
            [
                neutralise(cell) if cell.__class__ is str and cell[:1] in _FORMULA_CHARS else cell
                for cell in row
            ]
            for row in batch
        )
        yield buffer.getvalue()


def records_text(columns: Sequence[str], records: Iterable[dict[str, Any]]) -> str:
    """A whole CSV document of dict records (missing keys are empty cells)."""
    rows = [[record.get(name) for name in columns] for record in records]
    return "".join(chunks(columns, [rows]))


def response(
    body: Iterable[str | bytes] | str,
    *,
    filename: str,
    on_close: Callable[[], None] | None = None,
) -> Response:
    """A text/csv attachment over text written by this module (streamed unless a str).

    A stream's source is closed when the response ends, then `on_close` is called.
    """
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if isinstance(body, str):
        return Response(body, media_type=CSV_MEDIA, headers=headers)
    return ClosingStreamingResponse(body, media_type=CSV_MEDIA, headers=headers, on_close=on_close)
