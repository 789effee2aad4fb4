"""The FOCUS CSV export rendered by PostgreSQL: `COPY (query) TO STDOUT WITH (FORMAT csv)`.

The CSV the API writes from Python (app/kit/csv_out.py over `focus.iter_batches`) is the
definition; this query writes the same bytes at database speed, so the rows leave PostgreSQL
as CSV and Python only passes the chunks on. What the Python writer does is done in SQL:

- **Formula neutralisation** (OWASP CSV injection, csv_out): a text cell that starts with `=`,
  `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, unless it is a plain signed
  number; an empty text is an empty cell, as Python writes it (COPY would write `""`).
- **Numbers as Python writes them** (`repr(float)`): PostgreSQL prints the same shortest
  round-trip digits but lays some out differently: `100` for 100.0 (Python: `100.0`), `1e+15`
  for 1e15 (Python writes positional digits below 1e16), `NaN` and `Infinity` (`nan`, `inf`).

The query has three levels, each behind an `OFFSET 0` fence so PostgreSQL evaluates it once
per row instead of inlining it where the next level refers to it several times:

1. `focus_job`: the jobs selected, only the columns the record reads (the estimate snapshot cut
   to the fields it reads), sorted by finish; narrow rows make the sort cheap.
2. `focus_record`: the record of `focus_columns.columns`, the one definition shared with the
   Python path and the JSON export, computed over level 1.
3. The CSV text of each column.

`tests/reports/test_focus_pg.py` holds the two paths to the same bytes, with one exception it
states: a float between 2**53 and about 2**64 in magnitude (an integer, then; never a price or a
cost) may be printed with up to 17 significant digits by PostgreSQL where Python prints the
shortest; both read back as the same double.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
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
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter, ColumnElement, Null
from sqlalchemy.sql.functions import Function

from app.config import Settings
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


def csv_query(filters: ReportFilters, settings: Settings, *, tags: Any, source: Any) -> Select[Any]:
    """The FOCUS records selected by `filters` as CSV-ready text columns, in finish order.

    `tags` and `source` are the Tags expression and the FROM clause it needs (focus._tags).
    """
    needed = _job_columns([e for _, e in focus_columns.columns("postgresql", tags, settings)])
    snapshot = func.jsonb_build_object(
        *(arg for field in focus_columns.SNAPSHOT_FIELDS
          for arg in (field, Job.estimate_snapshot[field])),
        type_=JSONB,
    )  # fmt: skip
    jobs = (
        select(
            *(c for c in needed if c.name != "estimate_snapshot"),
            snapshot.label("estimate_snapshot"),
            tags.label("focus_tags"),
        )
        .select_from(source)
        .where(filters.where(), Job.act_cost_usd.is_not(None))
        .order_by(Job.finished_at, Job.id)
        .offset(0)
        .subquery("focus_job")
    )
    job = aliased(Job, jobs, adapt_on_names=True)
    named = focus_columns.columns("postgresql", jobs.c.focus_tags, settings, job)
    record = (
        select(*(expr.label(name) for name, expr in named), jobs.c.finished_at, jobs.c.id)
        .select_from(jobs)
        .order_by(jobs.c.finished_at, jobs.c.id)
        .offset(0)
        .subquery("focus_record")
    )
    return select(*(_formatted(name, record.c[name], expr) for name, expr in named)).order_by(
        record.c.finished_at, record.c.id
    )
