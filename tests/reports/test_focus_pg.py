"""PostgreSQL writes the FOCUS CSV itself (app/reports/focus_pg.py): byte for byte what the API's
Python writer makes of the same records, whatever text and numbers the rows hold, from lines
stored on the jobs and from lines computed at export alike; a stored line never outlives a change
to what it was made from."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, delete, func, select, text, update

from app.config import get_settings
from app.db import session_scope
from app.jobs.filters import ReportFilters, parse_filters
from app.kit import csv_out
from app.kit.queue import CONTROL_QUEUE, FILL_FOCUS_LINES_TASK, celery_config
from app.models import Job, JobStatus, JobTag
from app.reports import focus, focus_pg, rollups
from app.reports.focus_columns import COLUMNS
from tests.reports.factory import make_job, unique

# Text the columns may hold: formula starters, CSV specials, signed numbers, line breaks.
PIECES = (
    *("=", "+", "-", "@", "\t", "\r", "\n", ",", '"', "'", "\\", " ", "1", ".", "e", "é", "✓"),
    *("a", "aws", "-1.5", "+2e3", ".5", "٣", "\\.", "NULL"),
)
TEXT = st.lists(st.sampled_from(PIECES), max_size=5).map("".join)
# Floats PostgreSQL and Python print differently (100 vs 100.0, 1e+15 vs positional, NaN,
# Infinity), none so large or tiny that a product of two leaves float8's range (an error).
# Between 2**53 and about 2**64 (every double there is an integer) PostgreSQL may print up to
# 17 significant digits where Python's repr prints the shortest: the same double, other text.
EXACT_BELOW = 2.0**53
EDGE_FLOATS = (
    0.0, -0.0, 1.0, 100.0, -3.0, 0.1 + 0.2, 1e-05, 1e-4, 1e-300, 1e15, 1.5e15, -2.5e15,
    1234567890123456.8, 9999999999999998.0, 1e16, 1.2e17, 123456789012345.6, 1e100, 1e-100,
    math.nan, math.inf, -math.inf,
)  # fmt: skip
# Quotients stay in range, and no value lies in the stated exception (2**53 up, which
# test_floats_past_2_53_read_back_as_the_same_double covers): any-row equality is byte for byte.
MODERATE = [x for x in EDGE_FLOATS if not 0 < abs(x) < 1e-100 and not abs(x) >= EXACT_BELOW]
FLOAT = st.one_of(
    st.sampled_from(MODERATE),
    st.floats(
        min_value=-EXACT_BELOW, max_value=EXACT_BELOW, exclude_max=True, exclude_min=True
    ).filter(lambda x: x == 0 or abs(x) > 1e-100),
    st.floats(min_value=1e20, max_value=1e100),
    st.none(),
)
TEXT_COLUMNS = (
    "team", "model_ref", "gpu", "method", "status", "pricing", "region", "sku",
    "list_price_reference", "billing_provider", "cost_source", "provider",
)  # fmt: skip
FLOAT_COLUMNS = (
    "act_cost_usd", "act_gpu_hours", "price_per_gpu_hour", "est_cost_usd", "est_gpu_hours",
    "internal_usd_per_gpu_hour",
)  # fmt: skip
NOT_NULL = ("model_ref", "gpu", "method", "status", "pricing", "price_per_gpu_hour")


def _by_db(filters: ReportFilters) -> str:
    with session_scope() as session:
        chunks = focus.stream(session, filters, "csv")
        return "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)


def _stored(filters: ReportFilters) -> tuple[int, int]:
    """(jobs selected with a cost, those whose stored line is current)."""
    _, key = focus_pg.definition(get_settings())
    with session_scope() as session:
        row = session.execute(
            select(func.count(), func.count().filter(Job.focus_key == key)).where(
                filters.where(), Job.act_cost_usd.is_not(None)
            )
        ).one()
    return int(row[0]), int(row[1])


def _both(suite: str) -> tuple[str, str]:
    """The suite's FOCUS CSV as PostgreSQL writes it and as the Python writer writes it.

    The suite's jobs were last changed by a Core UPDATE (`_job`), so PostgreSQL computes their
    lines at export; then their lines are stored and the export, copying them, must not change.
    """
    filters = parse_filters(params={"tag.suite": [suite]})
    jobs, current = _stored(filters)
    assert jobs >= 1 and current == 0, "the Core update left a stored line"
    computed = _by_db(filters)
    with session_scope() as session:
        rollups.store_lines(session.connection(), filters.where())
    assert _stored(filters) == (jobs, jobs)
    assert _by_db(filters) == computed
    with session_scope() as session:
        by_py = "".join(focus.render_csv(focus.iter_batches(session, filters)))
    return computed, by_py


def _job(values: dict[str, Any], snapshot: dict[str, Any], tags: dict[str, str]) -> str:
    """A finished job of its own suite with `values` written over its columns; the suite."""
    suite = unique("pgcsv")
    with session_scope() as session:
        job = make_job(session, tags={"suite": suite, **tags})
        stmt = update(Job).where(Job.id == job.id)
        session.execute(stmt.values(estimate_snapshot=job.estimate_snapshot | snapshot, **values))
    return suite


def _drop(suite: str) -> None:
    with session_scope() as session:
        ids = (
            session.query(JobTag.job_id)
            .filter(JobTag.key == "suite", JobTag.value == suite)
            .scalar_subquery()
        )
        session.execute(delete(Job).where(Job.id.in_(ids)))


@pytest.fixture
def suites(isolated_db: str) -> Iterator[list[str]]:
    """Suites made by a test, deleted after it."""
    made: list[str] = []
    yield made
    for suite in made:
        _drop(suite)


@pytest.mark.parametrize("value", EDGE_FLOATS)
def test_every_float_is_written_as_python_writes_it(suites: list[str], value: float) -> None:
    suites.append(_job({"act_cost_usd": value, "act_gpu_hours": value}, {}, {}))
    by_db, by_py = _both(suites[-1])
    assert by_db == by_py
    (row,) = list(csv.DictReader(io.StringIO(by_db)))
    assert row["ListCost"] == repr(value)


@pytest.mark.parametrize("value", [2.0**53 + 2, 3.519140238352619e16, 9.72039874304346e16, 5e18])
def test_floats_past_2_53_read_back_as_the_same_double(suites: list[str], value: float) -> None:
    suites.append(_job({"act_cost_usd": value, "act_gpu_hours": value}, {}, {}))
    by_db, by_py = _both(suites[-1])
    (db,), (py,) = csv.DictReader(io.StringIO(by_db)), csv.DictReader(io.StringIO(by_py))
    assert float(db["ListCost"]) == float(py["ListCost"]) == value
    assert {k: v for k, v in db.items() if "Cost" not in k and "Quantity" not in k} == {
        k: v for k, v in py.items() if "Cost" not in k and "Quantity" not in k
    }


@pytest.mark.parametrize("column", TEXT_COLUMNS)
@pytest.mark.parametrize(
    "value", ["=1+1", "-2", "-2+3", "+", "@x", "\tx", "\r=1", "a\rb", 'q"uote', "", "٣", "-٣"]
)
def test_every_text_is_neutralised_as_python_does(
    suites: list[str], column: str, value: str
) -> None:
    if value == "" and column in NOT_NULL:
        value = " "
    suites.append(_job({column: value}, {"commitment_id": value}, {"note": value or "x"}))
    by_db, by_py = _both(suites[-1])
    assert by_db == by_py
    cells = [c for row in csv.reader(io.StringIO(by_db, newline="")) for c in row]
    formula = [c for c in cells if c.startswith(csv_out.FORMULA_PREFIXES)]
    assert all(csv_out.neutralise(c) == c for c in formula), formula


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    texts=st.fixed_dictionaries({c: TEXT for c in TEXT_COLUMNS}),
    floats=st.fixed_dictionaries({c: FLOAT for c in FLOAT_COLUMNS}),
    contracted=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    commitment=st.one_of(st.none(), TEXT),
    note=TEXT,
)
def test_any_row_is_written_alike(
    suites: list[str],
    texts: dict[str, str],
    floats: dict[str, float | None],
    contracted: float | None,
    commitment: str | None,
    note: str,
) -> None:
    values: dict[str, Any] = {**texts, **floats}
    for name in TEXT_COLUMNS:  # within the column's width (pricing holds 16 characters)
        kind = Job.__table__.c[name].type
        assert isinstance(kind, String)
        values[name] = values[name][: kind.length]
    for name in NOT_NULL:
        if values[name] is None or values[name] == "":
            values[name] = 1.0 if name in FLOAT_COLUMNS else "x"
    if values["act_cost_usd"] is None:
        values["act_cost_usd"] = 0.0  # a row without a metered cost is not exported
    snapshot = {"contracted_price_per_gpu_hour": contracted, "commitment_id": commitment}
    suites.append(_job(values, snapshot, {"note": note.strip() or "x"}))
    by_db, by_py = _both(suites[-1])
    assert by_db == by_py
    header, *rows = list(csv.reader(io.StringIO(by_db, newline="")))
    assert header == list(COLUMNS) and len(rows) == 1


def test_the_unfiltered_export_is_written_alike(suites: list[str]) -> None:
    # Exporting everything reads the tags in one grouped pass instead of a lookup per job.
    for i, value in enumerate(("=a", "b,c", 'd"', "x\ry", "-1", "")):
        suites.append(_job({"team": value, "region": value}, {}, {"note": f"n{i}", "k": "v"}))
    everything = parse_filters()
    with session_scope() as session:
        chunks = focus.stream(session, everything, "csv")
        by_db = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    with session_scope() as session:
        by_py = "".join(focus.render_csv(focus.iter_batches(session, everything)))
    assert by_db == by_py
    assert by_db.count("\n") >= 1 + len(suites)


def _python_line(job_id: str) -> str:
    filters = parse_filters(params={})
    with session_scope() as session:
        stmt = focus.query(filters, "postgresql").where(Job.id == job_id)
        rows = session.execute(stmt).all()
    _header, line = "".join(focus.render_csv(iter([rows]))).splitlines()
    return line


def _line_of(job_id: str) -> tuple[str | None, str | None]:
    with session_scope() as session:
        row = session.execute(select(Job.focus_line, Job.focus_key).where(Job.id == job_id)).one()
    return row[0], row[1]


def _job_of_own_suite(suites: list[str], **tags: str) -> tuple[str, str]:
    """(suite, id) of a finished job made through the ORM, in a suite of its own."""
    suite = unique("pgline")
    suites.append(suite)
    with session_scope() as session:
        return suite, make_job(session, tags={"suite": suite, **tags}).id


def test_a_flush_writes_the_line_and_a_change_writes_it_again(suites: list[str]) -> None:
    _, key = focus_pg.definition(get_settings())
    _, job_id = _job_of_own_suite(suites, k="v")
    assert _line_of(job_id) == (_python_line(job_id), key)
    with session_scope() as session:  # metering corrected, a tag added: through the ORM
        job = session.get(Job, job_id)
        assert job is not None
        job.act_cost_usd = 123.25
        session.add(JobTag(job_id=job_id, key="late", value="x,y"))
    line, stored_key = _line_of(job_id)
    assert stored_key == key and line == _python_line(job_id)
    assert "123.25" in line and '""late"" : ""x,y""' in line
    with session_scope() as session:  # an unfinished job has no line: reports skip it
        job = session.get(Job, job_id)
        assert job is not None
        job.finished_at = None
        job.status = JobStatus.QUEUED
    assert _line_of(job_id) == (None, None)


def test_the_trigger_clears_a_line_when_what_it_is_made_from_changes(
    suites: list[str],
) -> None:
    with session_scope() as session:
        definition = session.scalar(
            select(func.pg_get_triggerdef(text("oid")))
            .select_from(text("pg_trigger"))
            .where(text("tgname = 'jobs_focus_line_stale'"))
        )
    assert definition is not None
    watched = definition.lower()
    missing = [c for c in focus_pg.input_columns(get_settings()) if f"old.{c} " not in watched
               and f"old.{c})" not in watched and f"old.{c}," not in watched]  # fmt: skip
    assert not missing, f"a new migration must add {missing} to the trigger"
    suite, job_id = _job_of_own_suite(suites)
    line, key = _line_of(job_id)
    assert line is not None
    with session_scope() as session:  # a column the line is not made from: kept
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=func.now()))
    assert _line_of(job_id) == (line, key)
    with session_scope() as session:  # one it is made from, by a Core write: cleared
        session.execute(update(Job).where(Job.id == job_id).values(region="eu-west-1"))
    assert _line_of(job_id) == (None, None)
    filters = parse_filters(params={"tag.suite": [suite]})
    by_db = _by_db(filters)
    with session_scope() as session:
        by_py = "".join(focus.render_csv(focus.iter_batches(session, filters)))
    assert by_db == by_py and "eu-west-1" in by_db


def test_a_line_stored_under_other_settings_is_computed_again(suites: list[str]) -> None:
    suite, job_id = _job_of_own_suite(suites)
    stored, key = _line_of(job_id)
    assert stored is not None
    other = get_settings().model_copy(update={"focus_billing_account_name": "Other, Org"})
    assert focus_pg.definition(other)[1] != key
    filters = parse_filters(params={"tag.suite": [suite]})
    with session_scope() as session, focus_pg.session_settings(session.connection()):
        body = b"".join(focus._fetch_bytes(session, focus_pg.csv_query(filters, other))).decode()
    name = get_settings().focus_billing_account_name
    assert body == stored.replace(f",{name},", ',"Other, Org",', 1) + "\n"


def test_beat_fills_the_lines_jobs_lack(suites: list[str]) -> None:
    schedule = celery_config(get_settings())["beat_schedule"]["fill-focus-lines"]
    assert schedule["task"] == FILL_FOCUS_LINES_TASK
    assert schedule["options"] == {"queue": CONTROL_QUEUE}
    suite = unique("pgfill")
    suites.append(suite)
    with session_scope() as session:
        ids = [make_job(session, tags={"suite": suite}).id for _ in range(3)]
    with session_scope() as session:  # behind the listener's back: the lines are cleared
        session.execute(update(Job).where(Job.id.in_(ids)).values(sku="behind-the-back"))
    assert [_line_of(i) for i in ids] == [(None, None)] * 3
    assert focus_pg.fill(get_settings(), budget_s=0, batch=1) == 1  # one batch, however short
    assert focus_pg.fill(get_settings(), budget_s=120) >= 2
    _, key = focus_pg.definition(get_settings())
    for job_id in ids:
        line, stored_key = _line_of(job_id)
        assert stored_key == key and line == _python_line(job_id)
        assert line is not None and "behind-the-back" in line
    assert focus_pg.fill(get_settings(), budget_s=60) == 0  # nothing left to write
