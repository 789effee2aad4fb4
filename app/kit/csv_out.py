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
# A plain signed number (ASCII digits: what a spreadsheet reads as one), kept as it is.
NUMBER_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(NUMBER_PATTERN)


def neutralise(value: Any) -> Any:
    """A cell value safe for spreadsheets: None → empty, formula-like text → quoted text."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        if value[0] in "+-" and _NUMBER.fullmatch(value):
            return value
        return NEUTRALISER + value
    return value


def _has_cr(row: Sequence[Any]) -> bool:
    return any(cell.__class__ is str and "\r" in cell for cell in row)


def chunks(header: Sequence[str], batches: Iterable[Iterable[Sequence[Any]]]) -> Iterator[str]:
    """CSV text: the header, then one chunk per batch of rows (each a sequence of cells).

    A cell holding a line break is quoted (RFC 4180), a carriage return included: the csv module
    quotes only the characters of its line terminator, and a reader ends the row at a bare CR.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([neutralise(name) for name in header])
    yield buffer.getvalue()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        # neutralise() only on text starting with a formula character: the test runs inline
        # because this loop visits every cell of every export.
        rows = [
            [
                neutralise(cell) if cell.__class__ is str and cell[:1] in _FORMULA_CHARS else cell
                for cell in row
            ]
            for row in batch
        ]
        writer.writerows(rows)
        text = buffer.getvalue()
        if "\r" in text:
            text = "".join(_row_text(row) for row in rows)
        yield text


def _row_text(row: Sequence[Any]) -> str:
    """One row; a row with a carriage return in a cell is written with CRLF as the terminator,
    so the csv module quotes that cell, and the row then ends with LF like the others."""
    buffer = io.StringIO()
    if _has_cr(row):
        csv.writer(buffer, lineterminator="\r\n").writerow(row)
        return buffer.getvalue()[:-2] + "\n"
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()


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
