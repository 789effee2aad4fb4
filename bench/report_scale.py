"""Reports at scale: a tenant with N finished jobs in PostgreSQL, its reports and FOCUS export.

Creates a fresh PostgreSQL database (dropped at the end), migrates it with Alembic, and writes
the jobs in SQL (`generate_series`: a year of jobs of tenant `bench`, N of them, and N/20 of
another tenant, `other`, which the bench's key must never see), their tags (team, project,
cost_center, env), then computes the report rollups, tags texts and FOCUS lines once from them
(what the service keeps job by job). It prints, over real HTTP (uvicorn in a process of its
own, bench/served.py; httpx) with the tenant's read key:

- the estimate-vs-actual report per group_by and with filters (median of several runs; target
  under 150 ms), with the jobs it covered, where it read them from, and the time of the same
  report from the jobs themselves (one run, in the service: what a report cost before rollups);
- the weekly spend report (target under 150 ms);
- the FOCUS export of every row streamed as CSV and JSON (CSV target: 100,000 rows/s);
- the export's peak Python memory (tracemalloc) at a tenth of the rows and at all of them.

Every figure is checked before it is printed: each report covers exactly the tenant's jobs it
should (counted in SQL), groups are not empty, the export has one row per job with a cost; else
the bench exits non-zero.

Run: `.venv/bin/python bench/report_scale.py [--jobs 100000]`. The server is taken from
TUNECOST_BENCH_PG_ADMIN_URL (default: the test suite's postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import served

ADMIN_URL = os.environ.get(
    "TUNECOST_BENCH_PG_ADMIN_URL",
    os.environ.get(
        "TUNECOST_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)
TARGET_REPORT_S = 0.15
TARGET_FOCUS_ROWS_S = 100_000
RUNS = 7  # timed runs per figure; the median is printed
TENANT, OTHER = "bench", "other"
OTHER_SHARE = 20  # the other tenant has N / OTHER_SHARE jobs

# One statement writes every job: a year of 2025, methods, GPUs (with their list prices), models,
# providers (or none: self-hosted), statuses, estimates and actuals (lognormal error), and a
# MethodResult-sized estimate snapshot (about 700 bytes of JSON), as jobs store.
SEED_JOBS = """
WITH d AS (
  SELECT g,
    CASE WHEN g <= :n THEN :tenant ELSE :other END AS team,
    (ARRAY['full','lora','qlora'])[1 + floor(random() * 3)::int] AS method,
    1 + floor(random() * 7)::int AS gi,
    (ARRAY['aws','gcp','azure','lambda','runpod',NULL])[1 + floor(random() * 6)::int] AS provider,
    (ARRAY['succeeded','succeeded','succeeded','succeeded','succeeded','succeeded','succeeded',
           'succeeded','failed','cancelled','budget_exceeded'])[1 + floor(random() * 11)::int]
      AS status,
    'org/model-' || (ARRAY[1,3,7,8,13,14,32,70,72,405])[1 + floor(random() * 10)::int] || 'B'
      AS model,
    (ARRAY[1,1,2,4,8])[1 + floor(random() * 5)::int] AS num,
    0.05 + random() * 47.95 AS est_h,
    exp(0.1 + 0.3 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS err,
    timestamptz '2025-01-01 00:00:00+00' + random() * interval '365 days' AS finished,
    (1 + floor(random() * 79))::bigint << 30 AS w,
    (1 + floor(random() * 29))::bigint << 30 AS a,
    0.8 + random() * 0.5 AS peak_ratio,
    0.2 + random() * 0.25 AS mfu,
    random() < 0.5 AS spot
  FROM generate_series(1, :n + :n / :share) AS g
), j AS (
  SELECT d.*,
    (ARRAY['H100-80GB-SXM','A100-80GB','L40S','H200','A10G','RTX-4090','cpu'])[gi] AS gpu,
    (ARRAY[12.29, 5.12, 1.86, 10.6, 1.21, 0.69, 0.0])[gi] AS price,
    est_h * err * CASE WHEN status = 'succeeded' THEN 1 ELSE 0.4 END AS act_h,
    w + a + (2::bigint << 30) AS peak
  FROM d
)
INSERT INTO jobs (id, status, method, model_ref, gpu, num_gpus, provider, pricing, queue, team,
  request_hash, spec, estimate_snapshot, price_per_gpu_hour, est_cost_usd, est_gpu_hours,
  est_peak_bytes, est_artifact_bytes, started_at, finished_at, attempts, act_wall_s,
  act_gpu_hours, act_peak_bytes, act_peak_kind, act_cost_usd, cost_source, billing_provider,
  internal_usd_per_gpu_hour, errors, created_at, updated_at)
SELECT 'job_' || md5(g::text || '-bench'), status, method, model, gpu,
  CASE WHEN gpu = 'cpu' THEN 1 ELSE num END, provider,
  CASE WHEN spot THEN 'spot' ELSE 'on_demand' END, 'gpu.' || gpu, team, md5(g::text),
  jsonb_build_object('method', method), jsonb_build_object(
    'method', method, 'gpu', gpu, 'num_gpus', num, 'mfu', round(mfu::numeric, 3),
    'basis', 'prior', 'calibration_jobs', 0, 'steps', 100 + g % 19900, 'hours', est_h,
    'gpu_hours', est_h * num, 'memory', jsonb_build_object(
      'per_gpu_bytes', peak, 'low_bytes', (peak * 0.9)::bigint,
      'high_bytes', (peak * 1.15)::bigint, 'breakdown', jsonb_build_object(
        'weights', w, 'activations', a, 'logits', 1::bigint << 30,
        'overhead', 1::bigint << 30)),
    'time', jsonb_build_object('compute_s', est_h * 2880, 'optimizer_s', est_h * 360,
      'overhead_s', est_h * 180, 'dequant_s', est_h * 180, 'total_s', est_h * 3600),
    'notes', jsonb_build_array('padded to the longest example of each micro-batch')),
  price, est_h * num * price, est_h * num, peak, 1::bigint << 28,
  finished - act_h * interval '1 hour', finished, 1, act_h * 3600, act_h * num,
  (peak * peak_ratio)::bigint,
  CASE WHEN gpu = 'cpu' THEN 'cpu_rss' ELSE 'cuda_allocated' END, act_h * num * price,
  CASE WHEN gpu = 'cpu' OR provider IS NULL THEN 'self_hosted' ELSE 'cloud' END,
  CASE WHEN gpu = 'cpu' OR provider IS NULL THEN NULL ELSE provider END,
  CASE WHEN gpu = 'cpu' OR provider IS NULL THEN 0.02 END,
  jsonb_build_object('complete_run', status = 'succeeded'),
  finished - (act_h + 0.1) * interval '1 hour', finished
FROM j
"""
# Tags from the job's id, so they are reproducible: the team (the service sets it to the
# tenant), one of 40 projects, 12 cost centres and two environments.
SEED_TAGS = """
INSERT INTO job_tags (job_id, key, value)
SELECT id, 'team', team FROM jobs
UNION ALL
SELECT id, 'project', 'project-' || lpad((abs(hashtext(id || 'p')) % 40)::text, 2, '0') FROM jobs
UNION ALL
SELECT id, 'cost_center', 'cc-' || lpad((abs(hashtext(id || 'c')) % 12)::text, 2, '0') FROM jobs
UNION ALL
SELECT id, 'env', (ARRAY['prod', 'dev'])[1 + abs(hashtext(id || 'e')) % 2] FROM jobs
"""


def seed(url: str, n: int) -> tuple[float, float]:
    """Write the jobs and tags in SQL, then the rollups, tags texts and FOCUS lines; the seconds
    of each."""
    from app.reports import rollups

    engine = create_engine(url)
    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(0.2025)"))
        params = {"n": n, "tenant": TENANT, "other": OTHER, "share": OTHER_SHARE}
        conn.execute(text(SEED_JOBS), params)
        conn.execute(text(SEED_TAGS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
        conn.execute(text("VACUUM ANALYZE job_tags"))
    jobs_s = time.perf_counter() - t
    t = time.perf_counter()
    with engine.begin() as conn:
        rollups.rebuild(conn)  # and each job's tags text and FOCUS line: rewrites every job row
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    engine.dispose()
    return jobs_s, time.perf_counter() - t


def median_s(fn: Callable[[], Any], runs: int = RUNS) -> float:
    """Median wall seconds of `fn` over `runs` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _fail(message: str) -> None:
    raise SystemExit(f"report_scale: {message}")


CASES: tuple[tuple[str, dict[str, str]], ...] = (
    ("method", {}),
    ("status", {}),
    ("gpu", {}),
    ("model", {}),
    ("provider", {}),
    ("tag:team", {}),
    ("tag:project", {}),
    ("tag:cost_center", {}),
    ("tag:project", {"method": "lora", "from": "2025-04-01", "to": "2025-10-01"}),
    ("gpu", {"status": "succeeded", "from": "2025-03-14T09:30+05:30", "to": "2025-11-02T18:00Z"}),
)  # fmt: skip


def _expected_jobs(url: str, params: dict[str, str]) -> int:
    """The tenant's finished jobs a report with these filters covers, counted in SQL."""
    where = ["team = :team", "finished_at IS NOT NULL"]
    args: dict[str, Any] = {"team": TENANT}
    if "method" in params:
        where.append("method = :method")
        args["method"] = params["method"]
    if "status" in params:
        where.append("status = :status")
        args["status"] = params["status"]
    if "from" in params:
        where.append("finished_at >= :start")
        args["start"] = _instant(params["from"])
    if "to" in params:
        where.append("finished_at < :end")
        args["end"] = _instant(params["to"])
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.scalar(text(f"SELECT count(*) FROM jobs WHERE {' AND '.join(where)}"), args)
    engine.dispose()
    return int(count or 0)


def _instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def report_figures(base: str, key: str, url: str) -> None:
    """Every grouped report and the weekly spend over HTTP, checked against SQL counts."""
    import httpx

    from app.auth.service import Principal
    from app.db import session_scope
    from app.jobs.filters import parse_filters, parse_group_by
    from app.models import Scope
    from app.reports import service

    principal = Principal(key_id="bench", name="bench", scope=Scope.READ, team=TENANT)
    headers = {"Authorization": f"Bearer {key}"}
    print(f"\nestimate-vs-actual of tenant {TENANT!r} over HTTP (target < "
          f"{TARGET_REPORT_S * 1000:.0f} ms), load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
    print(f"  {'group_by + filters':<44}{'groups':>7}{'jobs':>10}  {'source':<8}"
          f"{'HTTP ms':>9}{'from jobs ms':>14}")  # fmt: skip
    slowest = 0.0
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for group_by, params in CASES:

            def over_http(p: dict[str, str] = params, g: str = group_by) -> Any:
                r = client.get("/v1/reports/estimate-vs-actual", params={**p, "group_by": g})
                r.raise_for_status()
                return r.json()

            body = over_http()
            want = _expected_jobs(url, params)
            if body["total"]["jobs"] != want or not body["rows"] or want == 0:
                _fail(f"{group_by} {params}: {body['total']['jobs']} jobs, {want} expected")
            http_s = median_s(over_http)
            slowest = max(slowest, http_s)
            filters = parse_filters(
                start=_instant(params["from"]) if "from" in params else None,
                end=_instant(params["to"]) if "to" in params else None,
                params={k: [v] for k, v in params.items() if k not in ("from", "to")},
                principal=principal,
            )
            t = time.perf_counter()
            with session_scope() as session:
                raw = service.estimate_vs_actual(
                    session, filters=filters, grouping=parse_group_by(group_by), use_rollups=False
                )
            raw_s = time.perf_counter() - t
            if raw.total.jobs != want:
                _fail(f"{group_by} {params}: the jobs give {raw.total.jobs}, SQL {want}")
            label = " ".join([group_by, *(f"{k}={v}" for k, v in params.items())])
            print(f"  {label[:43]:<44}{len(body['rows']):>7}{want:>10,}  {body['source']:<8}"
                  f"{http_s * 1000:>9.0f}{raw_s * 1000:>14.0f}")  # fmt: skip

        def weekly() -> Any:
            params = {"bucket": "week", "group_by": "tag:cost_center", "limit": "100000"}
            r = client.get("/v1/reports/spend", params=params)
            r.raise_for_status()
            return r.json()

        body = weekly()
        jobs = sum(row["jobs"] for row in body["rows"])
        want = _expected_jobs(url, {})
        if jobs != want or body["truncated"]:
            _fail(f"weekly spend: {jobs} jobs (truncated {body['truncated']}), {want} expected")
        spend_s = median_s(weekly)
        slowest = max(slowest, spend_s)
        print(f"  spend, weekly by tag:cost_center: {len(body['rows']):,} rows, {jobs:,} jobs, "
              f"{body['source']}, {spend_s * 1000:.0f} ms over HTTP")  # fmt: skip
    verdict = "meets" if slowest < TARGET_REPORT_S else "MISSES"
    print(f"  slowest report {slowest * 1000:.0f} ms: {verdict} the "
          f"{TARGET_REPORT_S * 1000:.0f} ms target")  # fmt: skip


def focus_http(base: str, key: str, fmt: str) -> tuple[float, int, int]:
    """Seconds, rows and bytes of the whole FOCUS export streamed over HTTP."""
    import httpx

    t = time.perf_counter()
    size = lines = 0
    headers = {"Authorization": f"Bearer {key}"}
    params = {"format": fmt}
    with (
        httpx.Client(base_url=base, headers=headers, timeout=600) as client,
        client.stream("GET", "/v1/reports/focus", params=params) as r,
    ):
        r.raise_for_status()
        for chunk in r.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    rows = lines - 1 if fmt == "csv" else lines - 2  # header / JSON prologue and epilogue
    return time.perf_counter() - t, rows, size


def focus_memory(end: datetime | None) -> tuple[int, int]:
    """(rows, peak traced bytes) of the tenant's CSV export of jobs finished before `end`."""
    from app.auth.service import Principal
    from app.db import session_scope
    from app.jobs.filters import parse_filters
    from app.models import Scope
    from app.reports import focus

    principal = Principal(key_id="bench", name="bench", scope=Scope.READ, team=TENANT)
    filters = parse_filters(start=None, end=end, params={}, principal=principal)
    tracemalloc.start()
    lines = 0
    with session_scope() as session:
        chunks: Iterator[str | bytes] = focus.stream(session, filters, "csv")
        for chunk in chunks:
            lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return lines - 1, peak


def main() -> None:
    """Create, seed, measure, print, drop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()

    name = f"tunecost_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        run(url, args.jobs)
    finally:
        from app.db import get_engine

        get_engine().dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, n: int) -> None:
    """Everything but creating and dropping the database."""
    os.environ["TUNECOST_DATABASE_URL"] = url
    os.environ["TUNECOST_BOOTSTRAP_ADMIN_KEY"] = "false"
    from app.auth import service as keys
    from app.config import get_settings
    from app.db import session_scope
    from app.kit.migrate import upgrade_head
    from app.models import Scope
    from app.reports import focus_pg

    upgrade_head(url)
    print(f"PostgreSQL {make_url(url).render_as_string(hide_password=True)}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    jobs_s, rollups_s = seed(url, n)
    with session_scope() as session:
        _, key = keys.create(session, name="bench", scope=Scope.READ, team=TENANT)
        size = session.scalar(text("SELECT pg_size_pretty(pg_total_relation_size('jobs'))"))
        counts = session.execute(
            text("SELECT count(*) FILTER (WHERE team = :t), count(*), "
                 "count(*) FILTER (WHERE team = :t AND act_cost_usd IS NOT NULL), "
                 "(SELECT count(*) FROM job_tags), (SELECT count(*) FROM report_rollups) "
                 "FROM jobs"), {"t": TENANT}
        ).one()  # fmt: skip
    mine, every, charged, tags, rollup_rows = (int(c) for c in counts)
    with session_scope() as session:
        _, line_key = focus_pg.definition(get_settings())
        lines = session.scalar(
            text("SELECT count(*) FROM jobs WHERE team = :t AND act_cost_usd IS NOT NULL "
                 "AND finished_at IS NOT NULL AND focus_key = :k"), {"t": TENANT, "k": line_key}
        )  # fmt: skip
    if mine != n:
        _fail(f"seeded {mine} jobs of {TENANT}, not {n}")
    print(f"seeded {every:,} jobs ({mine:,} of {TENANT!r}, {every - mine:,} of {OTHER!r}) and "
          f"{tags:,} tags in SQL in {jobs_s:.1f} s; {rollup_rows:,} rollup rows computed in "
          f"{rollups_s:.1f} s (with tags texts and FOCUS lines); jobs table with indexes and "
          f"TOAST: {size}; {lines:,} of the {charged:,} rows {TENANT!r} exports have their FOCUS "
          f"line stored")  # fmt: skip

    env = {**os.environ, "TUNECOST_DATABASE_URL": url, "TUNECOST_BOOTSTRAP_ADMIN_KEY": "false"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        served.serving(env, Path(tmp) / "server.log") as (base, _),
    ):
        report_figures(base, key, url)
        print(f"\nFOCUS export of every row of {TENANT!r} over HTTP (target CSV >= "
              f"{TARGET_FOCUS_ROWS_S:,} rows/s), load {os.getloadavg()[0]:.1f}:")  # fmt: skip
        for fmt in ("csv", "json"):
            seconds, rows, size_b = focus_http(base, key, fmt)
            if rows != charged:
                _fail(f"FOCUS {fmt}: {rows} rows exported, {charged} jobs have a cost")
            rate = rows / seconds
            verdict = ""
            if fmt == "csv":
                verdict = " meets the target" if rate >= TARGET_FOCUS_ROWS_S else " MISSES"
            print(f"  {fmt:<5}{rows:>10,} rows exported {size_b / 1e6:>8.1f} MB in "
                  f"{seconds:.2f} s ({rate:,.0f} rows/s){verdict}")  # fmt: skip

    with session_scope() as session:
        tenth = session.scalar(
            text("SELECT finished_at FROM jobs WHERE team = :t AND act_cost_usd IS NOT NULL "
                 "ORDER BY finished_at OFFSET :k LIMIT 1"), {"t": TENANT, "k": n // 10}
        )  # fmt: skip
    print("\nFOCUS CSV export peak Python memory (tracemalloc) by row count:")
    figures = [focus_memory(end) for end in (tenth, None)]
    print("  " + ", ".join(f"{rows:>9,} rows {peak / 1e6:5.2f} MB" for rows, peak in figures))


if __name__ == "__main__":
    main()
