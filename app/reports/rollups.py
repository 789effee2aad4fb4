"""Keeping the report rollups (app/models/report_rollup.py) equal to the finished jobs.

Whatever changes a job or its tags goes through a session flush, and every flush keeps the
rollups right in its own transaction: before it, the contributions of the jobs it touches are
taken away as the database holds them; after it, their contributions as the database now holds
them are added (`track`, a session listener registered by each process that writes jobs:
app/main.py, worker/celery_app.py). A job counts only once it has finished, so a job's edits,
cancels and retried attempts before its end cost nothing here, and a change to a finished job
(its actuals, status, tags, tenant) moves its figures from the old rows to the new ones.

Updates are `INSERT ... ON CONFLICT DO UPDATE` increments, ordered by key, so concurrent
transactions ending jobs of one tenant and day wait for each other's row locks instead of losing
an update. A Core UPDATE or DELETE of finished jobs bypasses the listener: call `refresh` on their
ids around it, or `rebuild` after loading rows in bulk (the benchmarks' COPY).

The same listener keeps each job's tags as the FOCUS export writes them (`Job.tags_text`, one
JSON object text), so the export copies them instead of aggregating the tag rows per job: a
flush that writes tag rows writes their jobs' text after it. A Core write of job_tags bypasses
it too: call `store_tags` on the jobs after it (`rebuild` does it for every job).

And each finished job's FOCUS CSV line (`Job.focus_line`, app/reports/focus_pg.py): adding a
job's contributions writes its line too. A Core write that bypasses the listener leaves no stale
line behind (a trigger clears it; the export computes what is missing) but no stored one either:
`refresh` (+1) or `store_lines` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    Select,
    String,
    Text,
    case,
    cast,
    delete,
    event,
    func,
    inspect,
    literal_column,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.sql.elements import ColumnElement

from app.config import get_settings
from app.models import Job, JobTag, report_rollups
from app.models.report_rollup import COUNT_COLUMNS, KEY_COLUMNS, SUM_COLUMNS
from app.reports import aggregates, focus_pg

GRAINS = ("day", "month")
TOTAL_DIM = "*"
# The job columns a report groups by, as rollup dims (method and status are key columns).
DIM_COLUMNS: dict[str, Any] = {
    "gpu": Job.gpu,
    "model": Job.model_ref,
    "provider": Job.provider,
    "team": Job.team,
    "cost_source": Job.cost_source,
}
TAG_DIM_PREFIX = "tag:"
_STAT_COLUMNS = (*COUNT_COLUMNS, *SUM_COLUMNS)
assert set(_STAT_COLUMNS) == set(aggregates.STAT_NAMES), "rollup columns != report figures"
_PENDING = "tunecost_rollup_jobs"  # session.info: ids whose contributions were taken away
_TAGGED = "tunecost_tagged_jobs"  # session.info: ids whose tag rows this flush writes


def _text(value: str) -> ColumnElement[Any]:
    """A constant as SQL text (no bound parameter, so GROUP BY positions stay simple)."""
    return literal_column("'" + value.replace("'", "''") + "'", String)


def tenant_key() -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The rollup's tenant and owner_key of a job (app/auth/tenancy.py: team, else its key)."""
    tenant = func.coalesce(Job.team, _text(""))
    owner = case((Job.team.is_(None), func.coalesce(Job.created_by_key_id, _text(""))), else_="")
    return tenant, owner


def utc_day(dialect: str, instant: Any) -> ColumnElement[Any]:
    """The UTC date of a timestamp column."""
    if dialect == "postgresql":
        return cast(func.timezone(_text("UTC"), instant), Date)
    return func.date(instant)


def month_of(dialect: str, day: Any) -> ColumnElement[Any]:
    """The first day of the month of a date column."""
    if dialect == "postgresql":
        return cast(func.date_trunc(_text("month"), cast(day, DateTime)), Date)
    return func.strftime(_text("%Y-%m-01"), day)


def _positions(n: int) -> list[Any]:
    return [text(str(i)) for i in range(1, n + 1)]


def _key_order() -> list[Any]:
    """The select's key positions in primary-key order: rows written in it lie where a report
    reads them together (one dim of one tenant), and concurrent upserts lock in one order."""
    return [text(str(KEY_COLUMNS.index(c.name) + 1)) for c in report_rollups.primary_key]


def _contributions(
    dialect: str, scope: ColumnElement[bool], grains: tuple[str, ...] = GRAINS
) -> Select[Any]:
    """The rollup rows of the finished jobs in `scope` at `grains`, ordered by key."""
    tenant, owner = tenant_key()
    day = utc_day(dialect, Job.finished_at)
    per_job = (
        select(
            Job.id.label("job_id"),
            tenant.label("tenant"),
            owner.label("owner_key"),
            day.label("day"),
            Job.method.label("method"),
            Job.status.label("status"),
            *(col.label(f"d_{dim}") for dim, col in DIM_COLUMNS.items()),
            *aggregates.row_columns(),
        )
        .where(Job.finished_at.is_not(None), scope)
        .cte("rollup_job")
    )
    if dialect == "postgresql":
        per_job = per_job.prefix_with("MATERIALIZED")
    j = per_job.c
    sums = [func.coalesce(func.sum(j[name]), 0).label(name) for name in _STAT_COLUMNS]
    parts = []
    for grain in grains:
        bucket = j.day if grain == "day" else month_of(dialect, j.day)
        keys = [
            j.tenant,
            j.owner_key,
            _text(grain).label("grain"),
            bucket.label("bucket_start"),
            j.method,
            j.status,
        ]
        groups: list[tuple[Any, Any, Any]] = [(per_job, _text(TOTAL_DIM), _text("")), *(
            (per_job, _text(dim), j[f"d_{dim}"]) for dim in DIM_COLUMNS
        )]  # fmt: skip
        tag_source = per_job.join(JobTag, JobTag.job_id == j.job_id)
        groups.append((tag_source, _text(TAG_DIM_PREFIX) + JobTag.key, JobTag.value))
        for source, dim, value in groups:
            stmt = select(*keys, dim.label("dim"), value.label("value"), *sums)
            stmt = stmt.select_from(source)
            if value is not JobTag.value:
                stmt = stmt.where(value.is_not(None))
            parts.append(stmt.group_by(*_positions(len(KEY_COLUMNS))))
    rows = union_all(*parts).subquery("rollup_rows")
    return (
        select(*(rows.c[i] for i in range(len(rows.c))))
        .where(true())  # SQLite's upsert parser needs a WHERE after INSERT ... SELECT
        .order_by(*_key_order())
    )


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _increment(dialect: str, rows: Select[Any], sign: int) -> Any:
    """INSERT the rows (times `sign`), adding them to the rows already there."""
    columns = [*KEY_COLUMNS, *_STAT_COLUMNS]
    if sign != 1:
        sub = rows.subquery("rollup_delta")
        rows = select(
            *(sub.c[i] for i in range(len(KEY_COLUMNS))),
            *(sub.c[i] * sign for i in range(len(KEY_COLUMNS), len(columns))),
        ).where(true())
    stmt = _insert(dialect)(report_rollups).from_select(columns, rows)
    table, new = report_rollups.c, stmt.excluded
    updates: dict[str, Any] = {name: table[name] + new[name] for name in COUNT_COLUMNS}
    for name in SUM_COLUMNS:
        counted_by = aggregates.stat(name).counted_by
        assert counted_by is not None
        empty = table[counted_by] + new[counted_by] == 0
        updates[name] = case((empty, 0.0), else_=table[name] + new[name])
    return stmt.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=updates)


def _apply(connection: Connection, job_ids: Iterable[str], sign: int) -> None:
    ids = sorted(set(job_ids))
    if not ids:
        return
    dialect = connection.dialect.name
    connection.execute(_increment(dialect, _contributions(dialect, Job.id.in_(ids)), sign))


def tags_text(dialect: str) -> Any:
    """The tags of the job of the outer query as one JSON object text, keys in order."""
    found: ColumnElement[Any]
    if dialect == "postgresql":
        # json_object(keys[], values[]) writes the text directly; jsonb_object_agg would build
        # and sort a jsonb value first (about twice the CPU per row).
        keys = func.array_agg(postgresql.aggregate_order_by(JobTag.key, JobTag.key))
        values = func.array_agg(postgresql.aggregate_order_by(JobTag.value, JobTag.key))
        found = cast(func.json_object(keys, values), Text)
    else:
        # SQLite reads a job's tags through the primary key (job_id, key): in key order.
        found = func.json_group_object(JobTag.key, JobTag.value)
    return select(found).where(JobTag.job_id == Job.id).correlate(Job).scalar_subquery()


def store_tags(connection: Connection, where: Any) -> None:
    """Write `Job.tags_text` of the jobs matching `where` from their tag rows."""
    tags = tags_text(connection.dialect.name)
    connection.execute(update(Job).where(where).values(tags_text=tags))


def refresh(session: Session, job_ids: Iterable[str], *, sign: int) -> None:
    """Take away (-1) or add (+1) the contributions of these jobs as the database holds them.

    Adding them also writes their FOCUS lines as the database now holds the jobs.
    """
    ids = sorted(set(job_ids))
    _apply(session.connection(), ids, sign)
    if sign > 0 and ids:
        store_lines(session.connection(), Job.id.in_(ids))


def store_lines(connection: Connection, where: Any) -> None:
    """Write the FOCUS lines of the finished jobs matching `where` (PostgreSQL; SQLite's export
    writes its CSV in Python)."""
    if connection.dialect.name == "postgresql":
        focus_pg.store(connection, where, get_settings())


def rebuild(connection: Connection) -> None:
    """Compute every rollup row, job's `tags_text` and FOCUS line again (after a bulk load, or
    to repair).

    The day rows from the jobs, then the month rows from the day rows (far fewer to read).
    """
    dialect = connection.dialect.name
    store_tags(connection, true())
    store_lines(connection, true())
    connection.execute(delete(report_rollups))
    columns = [*KEY_COLUMNS, *_STAT_COLUMNS]
    days = _contributions(dialect, true(), grains=("day",))
    connection.execute(report_rollups.insert().from_select(columns, days))
    r = report_rollups.c
    keys: list[ColumnElement[Any]] = [r[k] for k in KEY_COLUMNS]
    keys[KEY_COLUMNS.index("grain")] = _text("month").label("grain")
    keys[KEY_COLUMNS.index("bucket_start")] = month_of(dialect, r.bucket_start).label(
        "bucket_start"
    )
    months = (
        select(*keys, *(func.sum(r[name]).label(name) for name in _STAT_COLUMNS))
        .where(r.grain == "day")
        .group_by(*_positions(len(KEY_COLUMNS)))
        .order_by(*_key_order())
    )
    connection.execute(report_rollups.insert().from_select(columns, months))
    if dialect == "postgresql":
        connection.execute(text("ANALYZE report_rollups"))


# The listener: which jobs a flush touches, and their contributions before and after it.


def _finished_before_or_after(job: Job) -> bool:
    history = inspect(job).attrs.finished_at.history
    before = (history.deleted or history.unchanged or [None])[0]
    return before is not None or job.finished_at is not None


def _touched(session: Session) -> set[str]:
    """Ids of the jobs whose rollup contributions this flush may change."""
    ids: set[str] = set()
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Job):
            if (obj in session.deleted or session.is_modified(obj)) and (
                _finished_before_or_after(obj)
            ):
                ids.add(obj.id)
        elif isinstance(obj, JobTag):
            # A tag of a finished job changes its groups; of an unfinished one, nothing.
            job = session.identity_map.get(session.identity_key(Job, obj.job_id))
            if not isinstance(job, Job) or _finished_before_or_after(job):
                ids.add(obj.job_id)
    return ids


def _before_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    tagged = {
        obj.job_id
        for obj in (*session.new, *session.dirty, *session.deleted)
        if isinstance(obj, JobTag)
    }
    if tagged:
        session.info.setdefault(_TAGGED, set()).update(tagged)
    ids = _touched(session)
    if ids:
        refresh(session, ids, sign=-1)
        session.info.setdefault(_PENDING, set()).update(ids)


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    tagged = session.info.pop(_TAGGED, None)
    if tagged:
        store_tags(session.connection(), Job.id.in_(sorted(tagged)))
    ids = session.info.pop(_PENDING, None)
    if ids:
        refresh(session, ids, sign=1)


def track() -> None:
    """Keep the rollups in every session's flushes from now on (idempotent)."""
    if not event.contains(Session, "before_flush", _before_flush):
        event.listen(Session, "before_flush", _before_flush)
        event.listen(Session, "after_flush", _after_flush)
