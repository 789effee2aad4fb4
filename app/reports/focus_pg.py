"""The FOCUS CSV export rendered by PostgreSQL: each job's CSV line, kept on the job.

The CSV the API writes from Python (app/kit/csv_out.py over `focus.iter_batches`) is the
definition; PostgreSQL writes the same bytes. A finished job's line is computed once, when a
flush changes the job (the listener of app/reports/rollups.py calls `store`), and stored in
`jobs.focus_line` with the fingerprint of the SQL that wrote it (`focus_key`: the record's
definition and the settings it reads). An export reads the stored lines (`csv_query`: a
thousand lines a row), and computes in the same query the line of any job whose stored one
is missing or was written by another definition or other settings, so an export is always what
the definition writes today. A trigger (migration 0019) clears a job's line whenever an UPDATE
changes a column the line is made from, so a Core write that bypasses the listener leaves a
missing line, never a stale one.

What the Python writer does is done in SQL:

- **Formula neutralisation** (OWASP CSV injection, csv_out): a text cell that starts with `=`,
  `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, unless it is a plain signed
  number; an empty text is an empty cell, as Python writes it.
- **Numbers as Python writes them** (`repr(float)`): PostgreSQL prints the same shortest
  round-trip digits but lays some out differently: `100` for 100.0 (Python: `100.0`), `1e+15`
  for 1e15 (Python writes positional digits below 1e16), `NaN` and `Infinity` (`nan`, `inf`).
- **Quoting as the csv module does** (minimal, RFC 4180): a cell holding a comma, a double
  quote, a line feed or a carriage return is quoted and its quotes doubled.

The line is a scalar subquery of the job row of the outer statement, in four levels, each behind
an `OFFSET 0` fence so PostgreSQL evaluates it once instead of inlining it where the next level
refers to it several times: the job's columns the record reads (the estimate snapshot cut to the
fields it reads), the record of `focus_columns.columns` (the one definition shared with the
Python path and the JSON export), the CSV text of each cell, and the line.

`tests/reports/test_focus_pg.py` holds the two paths to the same bytes, stored lines and lines
computed at export alike, with one exception it states: a float between 2**53 and about 2**64 in
magnitude (an integer, then; never a price or a cost) may be printed with up to 17 significant
digits by PostgreSQL where Python prints the shortest; both read back as the same double.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
import types
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter, ColumnElement, Null
from sqlalchemy.sql.functions import Function
from sqlalchemy.sql.selectable import ScalarSelect

from app.config import Settings
from app.db import session_scope
from app.jobs.filters import ReportFilters
from app.kit import csv_out
from app.models import Job
from app.reports import focus_columns

# Python's repr() writes floats positionally below 1e16; PostgreSQL switches to an exponent at
# 1e15 (its DBL_DIG). Between the two the digits are laid out again in SQL.
PG_EXPONENT_FROM = 1e15
PY_EXPONENT_FROM = 1e16
PY_INT_DIGITS = 16  # digits before the point of a float in [1e15, 1e16)
_FORMULA_CODES = tuple(ord(c) for c in csv_out.FORMULA_PREFIXES)  # compared with ascii()
_SIGN_CODES = (ord("+"), ord("-"))
NUMBER_PATTERN = f"^{csv_out.NUMBER_PATTERN}$"  # PostgreSQL's ~ searches: anchor it
# Session settings of the export's transaction: floats printed shortest-exact whatever the
# server's default; no JIT (compiling the expressions cost more than it saved: 2.5 s of CPU
# without, 3.9 s with, for 200k rows); a sort of narrow rows mostly in memory; no parallel
# workers (each built the whole tag aggregate again: a tenant's 200k of 210k rows took 7.0-8.0 s
# with two, 5.3-5.8 s without, on a busy two-core machine).
# The settings a FOCUS record reads (app/reports/focus_columns.py): a stored line is valid for
# these values only. The record is built from an object holding just these, so reading another
# setting there fails at once.
SHAPING_SETTINGS = ("focus_billing_account_id", "focus_billing_account_name",
                    "focus_self_hosted_name")  # fmt: skip
# fill(): jobs per transaction (writing every line of report_scale's 1M jobs in one UPDATE took
# 187 s on a 2-core machine, ~190 us a row: ~0.4 s a batch), and seconds per beat run.
FILL_BATCH = 2000
FILL_BUDGET_S = 60.0
# Lines per row of the CSV export's query (csv_query): about 0.8 MB of text at ~800 bytes a line.
CHUNK_ROWS = 1000
KEY_CHARS = 16  # hex digits of the definition's SHA-256 kept as `jobs.focus_key`
# The csv module quotes a cell that holds its delimiter or quote character; csv_out also quotes
# one with a line feed or a carriage return (RFC 4180).
QUOTE_WHEN = '[,"\r\n]'
SETTINGS = {
    "extra_float_digits": "1",
    "jit": "off",
    "work_mem": "64MB",
    "max_parallel_workers_per_gather": "0",
}


def _special(name: str) -> Any:
    return cast(literal(name, Text), Float)


def py_float_text(value: Any) -> Any:
    """A float8 expression as the text Python's repr() writes (null stays null)."""
    text = cast(value, Text)
    digits = func.replace(func.replace(func.split_part(text, "e", 1), ".", ""), "-", "")
    positional = (
        case((value < 0, "-"), else_="")
        + func.rpad(func.left(digits, PY_INT_DIGITS), PY_INT_DIGITS, "0")
        + "."
        + func.coalesce(func.nullif(func.substr(digits, PY_INT_DIGITS + 1), ""), "0")
    )
    magnitude = func.abs(value)
    return case(
        (
            magnitude < literal(PG_EXPONENT_FROM, Float),
            case((value == func.trunc(value), text + ".0"), else_=text),
        ),
        (magnitude < literal(PY_EXPONENT_FROM, Float), positional),
        # PostgreSQL's NaN equals itself; its infinities print as Infinity.
        (value == _special("NaN"), "nan"),
        (value == _special("Infinity"), "inf"),
        (value == _special("-Infinity"), "-inf"),
        else_=text,
    )


def neutralised(value: Any) -> Any:
    """A text expression as csv_out writes the cell: formula-like text quoted, '' as null."""
    first = func.ascii(value)
    number = and_(first.in_(_SIGN_CODES), value.regexp_match(NUMBER_PATTERN))
    return case(
        (first.in_(_FORMULA_CODES), case((number, value), else_=literal("'", Text) + value)),
        else_=func.nullif(value, ""),
    )


def _constant(expr: Any) -> tuple[bool, str | None]:
    """(True, value) when `expr` is a text constant or null, else (False, None)."""
    if isinstance(expr, Null):
        return True, None
    if isinstance(expr, BindParameter) and (expr.value is None or isinstance(expr.value, str)):
        return True, expr.value
    if hasattr(expr, "clause") and isinstance(expr.clause, Null):  # CAST(NULL AS ...)
        return True, None
    return False, None


def _is_instant(expr: Any) -> bool:
    # focus_columns.iso / billing_period: ISO 8601 text, always starting with a digit.
    return isinstance(expr, Function) and expr.name in ("to_char", "strftime")


def _formatted(name: str, value: ColumnElement[Any], expr: Any) -> Any:
    """The CSV text of record column `name` (`value`: its level-2 column; `expr`: its SQL)."""
    constant, text = _constant(expr)
    if constant:
        # A constant (the settings' billing account, say): neutralised here, once.
        return literal(csv_out.neutralise(text) or None, Text).label(name)
    kind = expr.type
    if isinstance(kind, Float | Numeric):
        return py_float_text(value).label(name)
    if isinstance(kind, Integer):
        return value.label(name)
    if _is_instant(expr):
        return value.label(name)
    if isinstance(kind, String | Text):
        return neutralised(value).label(name)
    raise TypeError(f"FOCUS column {name}: no CSV rendering for SQL type {kind!r}")


def _job_columns(exprs: list[Any]) -> list[ColumnElement[Any]]:
    """The jobs columns the record expressions read, in table order."""
    table = Job.__table__
    clauses = [e.__clause_element__() if hasattr(e, "__clause_element__") else e for e in exprs]
    used = {
        el.name
        for clause in clauses
        for el in visitors.iterate(clause)
        if isinstance(el, Column) and el.table is table
    }
    return [c for c in table.columns if c.name in used]


def _cell(text: Any) -> Any:
    """A cell's CSV text as the csv module writes it (null: an empty cell)."""
    quoted = literal('"', Text) + func.replace(text, '"', '""') + '"'
    return case((text.regexp_match(QUOTE_WHEN), quoted), else_=func.coalesce(text, ""))


def tags_text() -> Any:
    """A job's Tags cell: its stored tags text (app/reports/rollups.py keeps it), `{}` if none."""
    return func.coalesce(Job.tags_text, "{}")


def _inputs(settings: Any) -> list[ColumnElement[Any]]:
    return _job_columns([e for _, e in focus_columns.columns("postgresql", tags_text(), settings)])


def input_columns(settings: Settings) -> list[str]:
    """The jobs columns a FOCUS line is made from (migration 0019's trigger watches them)."""
    return [c.name for c in _inputs(settings)]


def _line(settings: Any) -> ScalarSelect[Any]:
    """The CSV line (no terminator) of the job row of the enclosing statement."""
    tags = tags_text()
    needed = _inputs(settings)
    snapshot = func.jsonb_build_object(
        *(arg for field in focus_columns.SNAPSHOT_FIELDS
          for arg in (field, Job.estimate_snapshot[field])),
        type_=JSONB,
    )  # fmt: skip
    row = (
        select(
            *(c for c in needed if c.name != "estimate_snapshot"),
            snapshot.label("estimate_snapshot"),
            tags.label("focus_tags"),
        )
        .correlate(Job)
        .offset(0)
        .subquery("focus_job")
    )
    job = aliased(Job, row, adapt_on_names=True)
    named = focus_columns.columns("postgresql", row.c.focus_tags, settings, job)
    record = select(*(expr.label(name) for name, expr in named)).offset(0).subquery("focus_record")
    cells = (
        select(*(_formatted(name, record.c[name], expr) for name, expr in named))
        .offset(0)
        .subquery("focus_cells")
    )
    texts = (_cell(cast(cells.c[name], Text)) for name, _ in named)
    return select(func.concat_ws(",", *texts)).scalar_subquery()


@functools.lru_cache(maxsize=8)
def _definition(*values: str) -> tuple[ScalarSelect[Any], str]:
    shaping = types.SimpleNamespace(**dict(zip(SHAPING_SETTINGS, values, strict=True)))
    line = _line(shaping)
    dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]  # SQLAlchemy ships it untyped
    compiled = select(line).compile(dialect=dialect)
    source = json.dumps([str(compiled), sorted(compiled.params.items())], default=repr)
    return line, hashlib.sha256(source.encode()).hexdigest()[:KEY_CHARS]


def definition(settings: Settings) -> tuple[ScalarSelect[Any], str]:
    """(the line of the outer statement's job row, the fingerprint of its SQL) for `settings`."""
    return _definition(*(getattr(settings, name) for name in SHAPING_SETTINGS))


@contextlib.contextmanager
def session_settings(connection: Connection) -> Iterator[None]:
    """SETTINGS for the statements inside, the transaction's own values back after them."""
    names = list(SETTINGS)
    previous = connection.execute(select(*(func.current_setting(n) for n in names))).one()
    connection.execute(select(*(func.set_config(n, SETTINGS[n], True) for n in names)))
    yield
    # Only after a normal end: the values are the transaction's own (set_config's is_local), so
    # a transaction that failed or was cut short gets its own back when it is rolled back.
    back = (func.set_config(n, str(v), True) for n, v in zip(names, previous, strict=True))
    connection.execute(select(*back))


def store(connection: Connection, where: Any, settings: Settings) -> list[str]:
    """Write the CSV line of every finished job with a cost that matches `where` (PostgreSQL);
    the ids of the jobs written."""
    line, key = definition(settings)
    stmt = (
        update(Job)
        .where(where, Job.finished_at.is_not(None), Job.act_cost_usd.is_not(None))
        # The job itself is unchanged: its updated_at stays (the column's onupdate would move it).
        .values(focus_line=line, focus_key=key, updated_at=Job.updated_at)
        .returning(Job.id)
    )
    with session_settings(connection):
        return list(connection.execute(stmt).scalars())


def fill(settings: Settings, *, budget_s: float = FILL_BUDGET_S, batch: int = FILL_BATCH) -> int:
    """Write the lines that finished jobs with a cost lack (none stored, or one written by
    another definition or other settings), a batch per transaction in id order, until none is
    left or `budget_s` is spent (one batch at least); how many were written (PostgreSQL;
    elsewhere nothing to do).

    Run by celery beat (`focus_lines_every_s`): after an upgrade, a change of the settings a
    line reads, or a bulk write that bypassed the flush listener, exports are fast again once
    it has caught up (computing a missing line at export is as slow as the export once was).
    Each batch goes on from the last id written, so no batch reads again the rows its
    predecessors wrote; rows another transaction holds are skipped, never waited for.
    """
    _, key = definition(settings)
    lacking = or_(Job.focus_key.is_(None), Job.focus_key != key)
    written, after = 0, ""
    deadline = time.monotonic() + budget_s
    while True:  # at least one batch, then as many as the budget allows
        with session_scope() as session:
            connection = session.connection()
            if connection.dialect.name != "postgresql":
                return 0
            ids = (
                select(Job.id)
                .where(
                    Job.id > after,
                    Job.finished_at.is_not(None),
                    Job.act_cost_usd.is_not(None),
                    lacking,
                )
                .order_by(Job.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
            done = store(connection, Job.id.in_(ids.scalar_subquery()), settings)
        written += len(done)
        if len(done) < batch or time.monotonic() >= deadline:
            return written
        after = max(done)


def csv_query(filters: ReportFilters, settings: Settings) -> Select[Any]:
    """The CSV of the FOCUS records selected by `filters`, in finish order, as text rows of up
    to CHUNK_ROWS lines each (every line ends with a line feed): each job's stored line where
    today's definition and settings wrote it, else its line computed here.

    Rows of many lines because a row costs the Python side a few microseconds to receive,
    whatever its size: a million one-line rows took longer to pass on than PostgreSQL took to
    write them.
    A first pass numbers the selected jobs in finish order (reading only the reports' index);
    every CHUNK_ROWS-th one starts a chunk, whose lines are then read by an index range scan up
    to the next start. One statement, so one snapshot: no job is lost or repeated between chunks.
    """
    line, key = definition(settings)
    fresh = and_(Job.focus_key == key, Job.focus_line.is_not(None))
    selected = and_(filters.where(), Job.act_cost_usd.is_not(None))
    order = (Job.finished_at, Job.id)
    numbered = (
        select(*order, func.row_number().over(order_by=order).label("n"))
        .where(selected)
        .subquery("focus_numbered")
    )
    starts = (
        select(
            numbered.c.n,
            numbered.c.finished_at,
            numbered.c.id,
            func.lead(numbered.c.finished_at).over(order_by=numbered.c.n).label("next_at"),
            func.lead(numbered.c.id).over(order_by=numbered.c.n).label("next_id"),
        )
        .where(numbered.c.n % CHUNK_ROWS == 1)
        .subquery("focus_chunk")
    )
    position = tuple_(*order)
    after_start = and_(
        Job.finished_at >= starts.c.finished_at,
        position >= tuple_(starts.c.finished_at, starts.c.id),
    )
    before_next = and_(
        # The plain bound lets the index scan stop; the row comparison settles equal instants.
        Job.finished_at <= func.coalesce(starts.c.next_at, _special_instant("infinity")),
        or_(starts.c.next_at.is_(None), position < tuple_(starts.c.next_at, starts.c.next_id)),
    )
    lines = func.string_agg(
        case((fresh, Job.focus_line), else_=line) + literal("\n", Text),
        aggregate_order_by(literal("", Text), *order),
    )
    chunk = select(lines).where(selected, after_start, before_next).scalar_subquery()
    return select(chunk).select_from(starts).order_by(starts.c.n)


def _special_instant(name: str) -> Any:
    return cast(literal(name, Text), DateTime(timezone=True))
