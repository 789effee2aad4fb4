"""FinOps FOCUS 1.2 export: one Usage charge per finished job that has a metered cost.

The query itself yields each record in column order (timestamps already ISO 8601 text, tags
already a JSON object as text). The definition of the CSV is the API's one CSV writer
(app/kit/csv_out.py, which neutralises formula-like cells) over rows fetched in batches through
a server-side cursor (`yield_per`): what SQLite and any other caller of `iter_batches` get. On
PostgreSQL the database writes the same bytes itself: each job's CSV line is stored on the job
and the export fetches them a thousand lines a row through a server-side cursor (the
neutralising, number formatting and quoting done in SQL: app/reports/focus_pg.py); it renders
JSON (`json_build_object` through COPY). Either way the output leaves in chunks and memory stays
flat whatever the row count. Values are only ever what was recorded: a column is null when the
job lacks the figure, never filled with a guess.

Which columns and what they hold: app/reports/focus_columns.py (and the README table).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    FromClause,
    Select,
    String,
    Text,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from app.config import get_settings
from app.jobs.filters import ReportFilters
from app.kit import csv_out
from app.models import Job
from app.reports import focus_pg
from app.reports.focus_columns import COLUMNS
from app.reports.focus_columns import columns as focus_columns

FOCUS_VERSION = "1.2"
BATCH_ROWS = 2000  # rows per server-side fetch and per chunk written to the client
CHUNK_BYTES = 256 * 1024  # COPY output is passed on in pieces of about this size
FETCH_ROWS = 4  # rows of focus_pg.CHUNK_ROWS lines per server-side fetch of the CSV export
_TAGS = COLUMNS.index("Tags")
PG_MAX_ARGS = 100  # PostgreSQL's FUNC_MAX_ARGS: json_build_object takes 50 pairs at most


def _tags(filters: ReportFilters, dialect: str) -> tuple[Any, FromClause]:
    """The Tags expression and the FROM clause it needs: the job's stored tags text, kept by
    the flush listener (app/reports/rollups.py) from its tag rows.
    """
    return focus_pg.tags_text(), Job.__table__


def _charges(stmt: Select[Any], source: FromClause, filters: ReportFilters) -> Select[Any]:
    return (
        stmt.select_from(source)
        .where(filters.where(), Job.act_cost_usd.is_not(None))
        .order_by(Job.finished_at, Job.id)
    )


def query(filters: ReportFilters, dialect: str) -> Select[Any]:
    """One FOCUS record per job selected by `filters` that carries a metered cost."""
    tags, source = _tags(filters, dialect)
    columns = (col.label(name) for name, col in focus_columns(dialect, tags, get_settings()))
    return _charges(select(*columns), source, filters)


def iter_batches(session: Session, filters: ReportFilters) -> Iterator[Sequence[Any]]:
    """FOCUS records (tuples in COLUMNS order) in batches, through a server-side cursor."""
    dialect = session.get_bind().dialect.name
    result = session.execute(query(filters, dialect), execution_options={"yield_per": BATCH_ROWS})
    yield from result.partitions()


def as_dict(record: Sequence[Any]) -> dict[str, Any]:
    """A record as a dict with Tags parsed (for callers that want objects, not text)."""
    out = dict(zip(COLUMNS, record, strict=True))
    out["Tags"] = json.loads(out["Tags"])
    return out


def render_csv(batches: Iterator[Sequence[Any]]) -> Iterator[str]:
    """CSV text, the header first, then one chunk per batch; null is an empty cell."""
    return csv_out.chunks(COLUMNS, batches)


def _json_record(record: Sequence[Any]) -> str:
    # Tags is already a JSON object as text: splice it in instead of parsing and re-dumping.
    fields = dict(zip(COLUMNS, record, strict=True))
    tags: str = fields.pop("Tags")
    return json.dumps(fields, separators=(",", ":"))[:-1] + ',"Tags":' + tags + "}"


def render_json(batches: Iterator[Sequence[Any]]) -> Iterator[str]:
    """One JSON document, `{"focus_version": ..., "rows": [...]}`, written batch by batch."""
    yield json.dumps({"focus_version": FOCUS_VERSION})[:-1] + ', "rows": ['
    first = True
    for batch in batches:
        if not batch:
            continue
        text = ",\n".join(_json_record(record) for record in batch)
        yield ("\n" if first else ",\n") + text
        first = False
    yield "\n]}\n"


def _copy_out(session: Session, stmt: Select[Any], options: str) -> Iterator[bytes]:
    """Rows of `COPY (stmt) TO STDOUT WITH (options)`, one data message (one row) at a time."""
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection)  # COPY is PostgreSQL's, through psycopg
    copy_sql = f"COPY ({compiled}) TO STDOUT WITH ({options})"
    # COPY takes no server-side parameters; psycopg binds them client-side, escaped.
    with raw.cursor() as cur, cur.copy(copy_sql, compiled.params) as copy:
        for data in copy:
            yield bytes(data)


def _chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _json_object(pairs: list[Any]) -> Any:
    """json_build_object over any number of pairs, as text, keys kept in order.

    PostgreSQL functions take at most 100 arguments: build objects of up to 50 pairs and splice
    their text (`{"a" : 1}` and `{"b" : 2}` make `{"a" : 1, "b" : 2}`); jsonb `||` would
    reorder the keys.
    """
    parts = [
        cast(func.json_build_object(*pairs[i : i + PG_MAX_ARGS]), Text)
        for i in range(0, len(pairs), PG_MAX_ARGS)
    ]
    text: Any = parts[0]
    for part in parts[1:]:
        text = func.left(text, -1) + ", " + func.substr(part, 2)
    return text


def _pg_json(session: Session, filters: ReportFilters) -> Iterator[bytes]:
    pairs: list[Any] = []
    tags, source = _tags(filters, "postgresql")
    for name, col in focus_columns("postgresql", tags, get_settings()):
        pairs += [literal(name, String), cast(col, JSON) if name == "Tags" else col]
    objects = _charges(select(_json_object(pairs)), source, filters)
    yield (json.dumps({"focus_version": FOCUS_VERSION})[:-1] + ', "rows": [\n').encode()
    separator = b""
    for chunk in _chunked(_copy_out(session, objects, "FORMAT text")):
        # COPY's text format doubles backslashes and escapes control characters (which JSON
        # text never holds raw), one row per line: undo the doubling, put commas between rows.
        yield separator + chunk[:-1].replace(b"\\\\", b"\\").replace(b"\n", b",\n")
        separator = b",\n"
    yield b"\n]}\n"


def _fetch_bytes(session: Session, stmt: Select[Any]) -> Iterator[bytes]:
    """The one text column of `stmt`'s rows as UTF-8 bytes, row by row, through a server-side
    cursor in binary format (no escaping to undo, no text decoded and encoded again)."""
    conn = session.connection()
    row = stmt.subquery("focus_text")
    (column,) = row.c
    as_bytes = select(func.convert_to(column, "UTF8")).select_from(row)
    compiled = as_bytes.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection)
    with raw.cursor(name="tunecost_focus_csv", binary=True) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(str(compiled), compiled.params)
        while rows := cur.fetchmany(FETCH_ROWS):
            yield b"".join(data for (data,) in rows)


def _pg_csv(session: Session, filters: ReportFilters) -> Iterator[str | bytes]:
    """The CSV export written by PostgreSQL, byte for byte what render_csv writes: each job's
    stored line (or the line computed now, where it has none that is current), in chunks."""
    yield "".join(render_csv(iter(())))  # the header
    yield from _fetch_bytes(session, focus_pg.csv_query(filters, get_settings()))


def stream(
    session: Session, filters: ReportFilters, fmt: str
) -> Generator[str | bytes, None, None]:
    """The whole export as CSV or JSON text, in chunks."""
    if session.get_bind().dialect.name == "postgresql":
        with focus_pg.session_settings(session.connection()):
            yield from _pg_csv(session, filters) if fmt == "csv" else _pg_json(session, filters)
        return
    render = render_csv if fmt == "csv" else render_json
    yield from render(iter_batches(session, filters))
