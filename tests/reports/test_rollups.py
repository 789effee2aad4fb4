"""Reports from rollups equal reports from the jobs, on seeded random histories.

Each history has three tenants (two teams and a key without one), jobs of every method, status,
GPU, provider (or none), cost source and tag set, finishing on random instants of three months
with some on the stroke of midnight and of a month. After it is written, later transactions
change it as the service can: actuals corrected, a retried job billed again, statuses, finish
times moved across days and months, tags added, changed and removed, a job moved to another
tenant, jobs deleted, queued jobs cancelled and running ones ended. Then every grouping, over
windows with whole months, whole days, partial days in other time zones and none, under every
filter the rollups carry, must give what the raw query over the jobs gives, for each tenant
(never another's jobs) and an admin; and the rollups kept flush by flush must equal the rollups
computed again from scratch.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.auth import service as keys
from app.auth.service import Principal
from app.config import get_settings
from app.db import make_engine, session_scope
from app.jobs import lifecycle
from app.jobs.filters import ReportFilters, parse_filters, parse_group_by
from app.kit.migrate import upgrade_head
from app.models import Job, JobStatus, JobTag, Scope, report_rollups
from app.models.report_rollup import COUNT_COLUMNS, KEY_COLUMNS, SUM_COLUMNS
from app.reports import focus_pg, rollup_read, rollups, service
from app.reports.schemas import Bucket
from tests.reports.factory import make_job

GROUPINGS = (None, "method", "status", "gpu", "model", "provider", "team", "cost_source")
TAG_KEYS = ("project", "env")
START = datetime(2025, 1, 20, tzinfo=UTC)
SPAN_S = 90 * 86400
EDGES = (  # finish instants on the boundaries the reports cut at, and in their partial days
    datetime(2025, 3, 1, tzinfo=UTC),
    datetime(2025, 2, 28, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2025, 2, 10, tzinfo=UTC),
    datetime(2025, 2, 10, 5, tzinfo=UTC),
    datetime(2025, 3, 1, 18, tzinfo=UTC),
    datetime(2025, 3, 5, 1, tzinfo=UTC),
    datetime(2025, 3, 14, 10, tzinfo=UTC),
    datetime(2025, 4, 1, 3, tzinfo=UTC),
)
IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))
WINDOWS: tuple[tuple[datetime | None, datetime | None], ...] = (
    (None, None),
    (datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),  # whole months
    (datetime(2025, 2, 10, tzinfo=UTC), datetime(2025, 3, 20, tzinfo=UTC)),  # whole days
    (datetime(2025, 2, 10, 9, 30, tzinfo=IST), datetime(2025, 3, 31, 23, 59, 59, 500000, PST)),
    (datetime(2025, 3, 5, 1, tzinfo=UTC), datetime(2025, 3, 5, 13, tzinfo=UTC)),  # one day
    (datetime(2025, 3, 1, 12, tzinfo=UTC), None),
    (None, datetime(2025, 3, 15, tzinfo=IST)),
)


class History:
    """What one seed wrote: its tenants, the no-team key, and a team no job ends up in."""

    def __init__(self, seed: int, key_id: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.rng = random.Random(seed)
        self.teams = (f"ra-{tag}", f"rb-{tag}")
        self.key_id = key_id
        self.models = tuple(f"rollup-{tag}/m{i}" for i in range(3))

    def principals(self) -> list[Principal]:
        """Each tenant's reader and an admin."""
        return [
            *(Principal(key_id="k", name="t", scope=Scope.READ, team=t) for t in self.teams),
            Principal(key_id=self.key_id, name="own", scope=Scope.READ, team=None),
            Principal(key_id="admin", name="admin", scope=Scope.ADMIN, team=None),
        ]


def _finish(rng: random.Random) -> datetime:
    if rng.random() < 0.3:
        return rng.choice(EDGES)
    return START + timedelta(seconds=rng.uniform(0, SPAN_S))


def _tags(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(("x", "y", "z")) for k in TAG_KEYS if rng.random() < 0.7}


def _write(session: Session, h: History, n: int) -> list[str]:
    rng, ids = h.rng, []
    for _ in range(n):
        team = rng.choice((*h.teams, None))
        provider = rng.choice(("aws", "gcp", None))
        job = make_job(
            session,
            method=rng.choice(("full", "lora", "qlora")),
            gpu=rng.choice(("A100-80GB", "H100-80GB-SXM", "cpu")),
            model=rng.choice(h.models),
            provider=provider,
            status=rng.choice([s for s in JobStatus if s.is_final]),
            team=team,
            tags=_tags(rng),
            finished_at=_finish(rng),
            est_hours=rng.uniform(0.1, 5),
            act_hours=rng.choice((None, rng.uniform(0.1, 5))),
            act_peak=rng.choice((None, rng.randrange(1, 80) << 30)),
            peak_kind=rng.choice(("cuda_allocated", "cpu_rss")),
            est_allocated=rng.choice((None, rng.randrange(1, 80) << 30)),
            price=rng.choice((0.0, 2.5, 4.0)),
        )
        if team is None:
            job.created_by_key_id = h.key_id
        ids.append(job.id)
    session.flush()
    return ids


def _edit(session: Session, h: History, ids: list[str]) -> None:
    """Change the finished history as the service can, in one transaction."""
    rng = h.rng
    finished = Job.id.in_(ids) & Job.finished_at.is_not(None)
    for job in session.scalars(select(Job).where(finished).order_by(Job.id)):
        roll = rng.random()
        if roll < 0.15:  # metering corrected, or a retried attempt billed on top
            job.act_cost_usd = (job.act_cost_usd or 0.0) + rng.uniform(0, 20)
            job.act_gpu_hours = rng.choice((None, rng.uniform(0.1, 9)))
        elif roll < 0.25:
            job.status = rng.choice((JobStatus.FAILED, JobStatus.CANCELLED))
            job.provider = None
        elif roll < 0.35:  # finish moved across a day, and sometimes a month
            assert job.finished_at is not None
            job.finished_at += timedelta(hours=rng.choice((-30, -1, 1, 26, 24 * 20)))
        elif roll < 0.45:
            tags = list(session.scalars(select(JobTag).where(JobTag.job_id == job.id)))
            if tags:
                victim = rng.choice(tags)
                if rng.random() < 0.5:
                    session.delete(victim)
                else:
                    victim.value = "changed"
            if not any(t.key == "late" for t in tags):
                session.add(JobTag(job_id=job.id, key="late", value=rng.choice(("p", "q"))))
        elif roll < 0.5:  # moved to another tenant
            job.team = rng.choice(h.teams)
        elif roll < 0.55:
            session.delete(job)
        elif roll < 0.65:  # never finished after all: re-queued, its actuals pending
            job.finished_at = None
            job.status = JobStatus.QUEUED
            job.act_cost_usd = None


def _end_the_unfinished(session: Session, ids: list[str]) -> None:
    """Queued jobs cancelled (the lifecycle's own transition), running ones failed."""
    for n, job in enumerate(
        session.scalars(select(Job).where(Job.id.in_(ids), Job.finished_at.is_(None)))
    ):
        if n % 2:
            lifecycle.cancel(session, job)
        else:
            job.status = JobStatus.RUNNING
            job.act_cost_usd = 1.25  # what its attempts were billed
            lifecycle.end(session, job, JobStatus.FAILED, detail="worker lost twice")


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, f"{where}: {a} != {b}"
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-7), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _filter_sets(h: History, group_by: str | None) -> list[dict[str, list[str]]]:
    out: list[dict[str, list[str]]] = [
        {},
        {"method": ["lora"]},
        {"status": ["succeeded", "failed"], "method": ["full", "qlora"]},
        {"team": [h.teams[0]]},
    ]
    grouped = {"model": h.models[0], "provider": "aws", "gpu": "cpu", "tag:env": "x"}
    if group_by in grouped:
        name = group_by.replace("tag:", "tag.")
        out.append({name: [grouped[group_by]]})
    return out


def _cases(h: History) -> Iterator[tuple[ReportFilters, str | None]]:
    """Every grouping x filter set x window, each asked by the next of the principals."""
    principals = h.principals()
    n = 0
    for group_by in (*GROUPINGS, *(f"tag:{k}" for k in (*TAG_KEYS, "late"))):
        for params in _filter_sets(h, group_by):
            for start, end in WINDOWS:
                principal = principals[n % len(principals)]
                n += 1
                filters = parse_filters(start=start, end=end, params=params, principal=principal)
                if principal.is_admin:  # other tests' jobs share the database: ours only
                    cols = {**filters.columns}
                    cols.setdefault("team", h.teams)
                    filters = ReportFilters(
                        filters.start, filters.end, cols, filters.tags, principal
                    )
                yield filters, group_by


def _compare_reports(session: Session, h: History) -> int:
    checked = 0
    buckets: tuple[Bucket, ...] = ("day", "week", "month")
    for n, (filters, group_by) in enumerate(_cases(h)):
        grouping = parse_group_by(group_by)
        assert rollup_read.answerable(filters, grouping)
        got = service.estimate_vs_actual(session, filters=filters, grouping=grouping, limit=9999)
        want = service.estimate_vs_actual(
            session, filters=filters, grouping=grouping, limit=9999, use_rollups=False
        )
        assert (got.source, want.source) == ("rollups", "rows")
        where = f"{group_by} {filters}"
        _close(
            {r.group: r.model_dump() for r in got.rows},
            {r.group: r.model_dump() for r in want.rows},
            where,
        )
        _close(got.total.model_dump(), want.total.model_dump(), where)
        checked += want.total.jobs
        if filters.principal is not None and filters.principal.team is not None:
            assert {r.group for r in got.rows if group_by == "team"} <= {filters.principal.team}
        if group_by in (None, "method", "provider", "tag:env"):
            bucket = buckets[n % 3]
            spent = service.spend(
                session, filters=filters, grouping=grouping, bucket=bucket, limit=9999
            )
            raw = service.spend(
                session,
                filters=filters,
                grouping=grouping,
                bucket=bucket,
                limit=9999,
                use_rollups=False,
            )
            assert (spent.source, raw.source) == ("rollups", "rows")
            _close(
                {(r.bucket_start, r.group): r.model_dump() for r in spent.rows},
                {(r.bucket_start, r.group): r.model_dump() for r in raw.rows},
                f"spend {where}",
            )
    return checked


def _tenant_jobs(session: Session, h: History, principal: Principal) -> int:
    """Finished jobs the principal may see, counted in Python from the rows."""
    jobs = session.scalars(select(Job).where(Job.model_ref.in_(h.models))).all()
    return sum(
        1
        for j in jobs
        if j.finished_at is not None
        and (
            j.team == principal.team
            if principal.team is not None
            else (j.team is None and j.created_by_key_id == principal.key_id)
        )
    )


def _rollup_rows(session: Session, h: History) -> dict[tuple[Any, ...], dict[str, float]]:
    r = report_rollups.c
    mine = (r.tenant.in_(h.teams)) | ((r.tenant == "") & (r.owner_key == h.key_id))
    out = {}
    for row in session.execute(select(report_rollups).where(mine)).mappings():
        figures = {c: float(row[c]) for c in (*COUNT_COLUMNS, *SUM_COLUMNS)}
        if figures["jobs"] == 0:
            assert not any(figures.values()), "an emptied rollup row keeps figures"
            continue
        out[tuple(str(row[k]) for k in KEY_COLUMNS)] = figures
    return out


def _history(session_factory: Any, seed: int, n: int) -> History:
    with session_factory() as session:
        key, _ = keys.create(session, name=f"rollup-{seed}", scope=Scope.SUBMIT)
        session.commit()
        h = History(seed, key.id)
    with session_factory() as session:
        ids = _write(session, h, n)
        session.commit()
    for _ in range(2):
        with session_factory() as session:
            _edit(session, h, ids)
            session.commit()
    with session_factory() as session:
        _end_the_unfinished(session, ids)
        session.commit()
    return h


def _lines_are_current(session: Session, h: History) -> int:
    """Every job of the history a FOCUS export holds has its line stored, and it is the line
    the definition computes from the job now (PostgreSQL); the count of such jobs."""
    line, key = focus_pg.definition(get_settings())
    mine = Job.team.in_(h.teams) | (Job.created_by_key_id == h.key_id)
    exported = Job.finished_at.is_not(None) & Job.act_cost_usd.is_not(None)
    with focus_pg.session_settings(session.connection()):
        rows = session.execute(
            select(Job.id, Job.focus_key, Job.focus_line == line).where(mine, exported)
        ).all()
    stale = [job_id for job_id, stored_key, same in rows if stored_key != key or not same]
    assert not stale, f"{len(stale)} of {len(rows)} lines missing or stale"
    return len(rows)


def _check(session: Session, h: History) -> None:
    assert _compare_reports(session, h) > 0
    if session.get_bind().dialect.name == "postgresql":
        assert _lines_are_current(session, h) > 0
    for principal in h.principals()[:3]:
        report = service.estimate_vs_actual(
            session, filters=parse_filters(principal=principal), grouping=parse_group_by(None)
        )
        assert report.source == "rollups"
        assert report.total.jobs == _tenant_jobs(session, h, principal) > 0
    kept = _rollup_rows(session, h)
    rollups.rebuild(session.connection())
    again = _rollup_rows(session, h)
    _close(kept, again, "rollups kept flush by flush vs computed again")
    session.rollback()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_equal_the_jobs_on_postgres(service_env: object, seed: int) -> None:
    h = _history(session_scope, seed, 70)
    with session_scope() as session:
        _check(session, h)


def test_rollups_equal_the_jobs_on_sqlite(sqlite_url: str) -> None:
    upgrade_head(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        h = _history(lambda: Session(engine), 4, 50)
        with Session(engine) as session:
            _check(session, h)
    finally:
        engine.dispose()


def test_a_report_the_rollups_do_not_hold_says_it_read_the_jobs(service_env: object) -> None:
    with session_scope() as session:
        job = make_job(session, team="ml", tags={"project": "solo"})
        session.flush()
        filters = parse_filters(params={"gpu": [job.gpu]}, principal=None)
        report = service.estimate_vs_actual(
            session, filters=filters, grouping=parse_group_by("tag:project")
        )
        assert report.source == "rows"
        by_job = service.estimate_vs_actual(
            session, filters=parse_filters(), grouping=parse_group_by("job")
        )
        assert by_job.source == "rows"
        session.execute(delete(Job).where(Job.id == job.id))
        session.rollback()
