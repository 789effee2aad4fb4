"""Reports at scale: 100,000 finished jobs in PostgreSQL, the grouped report and the FOCUS export.

Creates a fresh PostgreSQL database (dropped at the end), migrates it with Alembic, bulk-loads
jobs and their tags with COPY, then prints:

- the estimate-vs-actual report per group_by (median of several runs), in the service and over
  real HTTP (uvicorn + httpx): target under 300 ms;
- the FOCUS export of every row streamed over HTTP as CSV and JSON: target under 5 s;
- the export's peak Python memory (tracemalloc) at 10k and at 100k rows: it must not grow with
  the row count, since rows are fetched through a server-side cursor and written batch by batch.

Run: `.venv/bin/python bench/report_scale.py [--jobs 100000]`. The server is taken from
TUNECOST_BENCH_PG_ADMIN_URL (default: the test suite's postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ADMIN_URL = os.environ.get(
    "TUNECOST_BENCH_PG_ADMIN_URL",
    os.environ.get(
        "TUNECOST_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)
TARGET_REPORT_S = 0.3
TARGET_FOCUS_S = 5.0
RUNS = 7  # timed runs per figure; the median is printed
SEED = 20250101

METHODS = ("full", "lora", "qlora")
GPUS = {
    "H100-80GB-SXM": 12.29,
    "A100-80GB": 5.12,
    "L40S": 1.86,
    "H200": 10.6,
    "A10G": 1.21,
    "RTX-4090": 0.69,
    "cpu": 0.0,
}
PROVIDERS = ("aws", "gcp", "azure", "lambda", "runpod", None)
STATUSES = ("succeeded",) * 8 + ("failed", "cancelled", "budget_exceeded")
MODELS = tuple(f"org/model-{i}B" for i in (1, 3, 7, 8, 13, 14, 32, 70, 72, 405))
TEAMS = tuple(f"team-{i:02d}" for i in range(12))
PROJECTS = tuple(f"project-{i:02d}" for i in range(40))
JOB_COLUMNS = (
    "id", "status", "method", "model_ref", "gpu", "num_gpus", "provider", "pricing", "queue",
    "team", "request_hash", "spec", "estimate_snapshot", "price_per_gpu_hour", "est_cost_usd",
    "est_gpu_hours", "est_peak_bytes", "est_artifact_bytes", "started_at", "finished_at",
    "attempts", "act_wall_s", "act_gpu_hours", "act_peak_bytes", "act_peak_kind",
    "act_cost_usd", "errors", "created_at", "updated_at",
)  # fmt: skip


def _snapshot(rng: random.Random, method: str, gpu: str, n: int, hours: float) -> dict[str, Any]:
    """A MethodResult-sized estimate (about 1 kB of JSON), as jobs store."""
    total = hours * 3600
    parts = {
        "weights": rng.randrange(1, 80) << 30,
        "gradients": rng.randrange(1, 20) << 30,
        "optimizer_states": rng.randrange(1, 40) << 30,
        "master_weights": 0,
        "activations": rng.randrange(1, 30) << 30,
        "logits": 1 << 30,
        "overhead": 1 << 30,
    }
    peak = sum(parts.values())
    return {
        "method": method, "gpu": gpu, "num_gpus": n, "mfu": round(rng.uniform(0.2, 0.45), 3),
        "basis": "prior", "calibration_jobs": 0, "steps": rng.randrange(100, 20000),
        "hours": hours, "gpu_hours": hours * n, "memory": {
            "per_gpu_bytes": peak, "low_bytes": int(peak * 0.9), "high_bytes": int(peak * 1.15),
            "breakdown": parts},
        "time": {"compute_s": total * 0.8, "weight_stream_s": 0.0, "dequant_s": total * 0.05,
                 "optimizer_s": total * 0.1, "comm_s": 0.0, "overhead_s": total * 0.05,
                 "total_s": total},
        "flops_detail": {"per_token": {"forward": 1.4e10, "backward_input": 1.4e10,
                                       "total": 4.2e10}, "total": 4.2e10 * 1e8},
        "notes": ["padded to the longest example of each micro-batch"],
    }  # fmt: skip


def job_rows(n: int, rng: random.Random) -> Iterator[tuple[tuple[Any, ...], list[tuple[str, str]]]]:
    """`n` finished jobs over 2025 and their tags (team, project, env), reproducibly."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for _ in range(n):
        method, gpu = rng.choice(METHODS), rng.choice(tuple(GPUS))
        num = 1 if gpu == "cpu" else rng.choice((1, 1, 2, 4, 8))
        price, status = GPUS[gpu], rng.choice(STATUSES)
        est_h = rng.uniform(0.05, 48.0)
        act_h = est_h * rng.lognormvariate(0.1, 0.3) * (0.4 if status != "succeeded" else 1)
        finished = start + timedelta(seconds=rng.uniform(0, 365 * 86400))
        snap = _snapshot(rng, method, gpu, num, est_h)
        peak = snap["memory"]["per_gpu_bytes"]
        team = rng.choice(TEAMS)
        job_id = f"job_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        row = (
            job_id, status, method, rng.choice(MODELS), gpu, num, rng.choice(PROVIDERS),
            rng.choice(("on_demand", "spot")), f"gpu.{gpu}", team, uuid.uuid4().hex,
            json.dumps({"method": method}), json.dumps(snap), price, est_h * num * price,
            est_h * num, peak, 1 << 28, finished - timedelta(hours=act_h), finished, 1,
            act_h * 3600, act_h * num, int(peak * rng.uniform(0.8, 1.3)),
            "cpu_rss" if gpu == "cpu" else "cuda_allocated", act_h * num * price,
            json.dumps({"complete_run": status == "succeeded"}),
            finished - timedelta(hours=act_h + 0.1), finished,
        )  # fmt: skip
        tags = [
            ("team", team),
            ("project", rng.choice(PROJECTS)),
            ("env", rng.choice(("prod", "dev"))),
        ]
        yield row, tags


def seed(url: str, n: int) -> float:
    """COPY `n` jobs and their tags into the database at `url`; returns seconds taken."""
    t = time.perf_counter()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rng = random.Random(SEED)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        tags: list[tuple[str, str, str]] = []
        with cur.copy(f"COPY jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
            for row, job_tags in job_rows(n, rng):
                copy.write_row(row)
                tags.extend((row[0], k, v) for k, v in job_tags)
        with cur.copy("COPY job_tags (job_id, key, value) FROM STDIN") as copy:
            for tag in tags:
                copy.write_row(tag)
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE jobs")
        cur.execute("VACUUM ANALYZE job_tags")
    return time.perf_counter() - t


def median_s(fn: Callable[[], Any], runs: int = RUNS) -> float:
    """Median wall seconds of `fn` over `runs` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms(fn: Callable[[Any], Any]) -> float:
    """CPU milliseconds of `fn(session)`: its PostgreSQL backend (serial plan) plus this process.

    Wall time on this shared machine depends on what else runs; CPU time much less so. With
    parallel query off, backend CPU is about what the query takes on one idle core.
    """
    from sqlalchemy import text as sql

    from app.db import session_scope

    with session_scope() as session:
        session.execute(sql("SET max_parallel_workers_per_gather = 0"))
        pid = int(session.execute(sql("SELECT pg_backend_pid()")).scalar_one())
        fn(session)  # warm
        db0, py0 = _proc_cpu_s(pid), time.process_time()
        fn(session)
        return (_proc_cpu_s(pid) - db0 + time.process_time() - py0) * 1000


class Server:
    """The real app under uvicorn in a background thread, on a free local port."""

    def __init__(self) -> None:
        import uvicorn

        from app.main import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(create_app(), port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def report_figures(base: str, key: str) -> None:
    """The grouped report in the service and over HTTP, per group_by."""
    import httpx

    from app.db import session_scope
    from app.jobs.filters import parse_filters, parse_group_by
    from app.reports import service

    everything = parse_filters(start=None, end=None, params={})
    headers = {"Authorization": f"Bearer {key}"}
    print(f"\nestimate-vs-actual over all rows (target < {TARGET_REPORT_S * 1000:.0f} ms), "
          f"load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
    print(f"  {'group_by':<28}{'rows':>6}{'service ms':>12}{'HTTP ms':>10}{'CPU ms':>9}")
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        window = {"method": "lora", "from": "2025-04-01", "to": "2025-10-01"}
        cases = [("method", {}), ("gpu", {}), ("model", {}), ("provider", {}),
                 ("tag:team", {}), ("tag:project", {}), ("tag:team", window)]  # fmt: skip
        for group_by, params in cases:
            filters = parse_filters(
                start=datetime.fromisoformat(params["from"]).replace(tzinfo=UTC)
                if "from" in params else None,
                end=datetime.fromisoformat(params["to"]).replace(tzinfo=UTC)
                if "to" in params else None,
                params={k: [v] for k, v in params.items() if k not in ("from", "to")},
            ) if params else everything  # fmt: skip
            grouping = parse_group_by(group_by)

            def report(session: Any, f: Any = filters, g: Any = grouping) -> Any:
                return service.estimate_vs_actual(session, filters=f, grouping=g)

            def in_service(f: Any = filters, g: Any = grouping) -> Any:
                with session_scope() as session:
                    return report(session)

            def over_http(p: dict[str, str] = params, g: str = group_by) -> Any:
                r = client.get("/v1/reports/estimate-vs-actual", params={**p, "group_by": g})
                r.raise_for_status()
                return r

            rows = len(in_service().rows)
            label = group_by + (" +filters" if params else "")
            print(f"  {label:<28}{rows:>6}{median_s(in_service) * 1000:>12.0f}"
                  f"{median_s(over_http) * 1000:>10.0f}{cpu_ms(report):>9.0f}")  # fmt: skip
        spend_s = median_s(lambda: client.get(
            "/v1/reports/spend", params={"bucket": "week", "group_by": "tag:team"}
        ).raise_for_status())  # fmt: skip
        weekly = parse_group_by("tag:team")
        spend_cpu = cpu_ms(
            lambda session: service.spend(
                session, filters=everything, grouping=weekly, bucket="week"
            )
        )
        print(f"  spend, weekly by tag:team: {spend_s * 1000:.0f} ms over HTTP, "
              f"{spend_cpu:.0f} ms CPU")  # fmt: skip


def focus_http(base: str, key: str, fmt: str) -> tuple[float, int, int]:
    """Seconds, rows and bytes of the whole FOCUS export streamed over HTTP."""
    import httpx

    t = time.perf_counter()
    size = lines = 0
    headers = {"Authorization": f"Bearer {key}"}
    params = {"format": fmt}
    with (
        httpx.Client(base_url=base, headers=headers, timeout=120) as client,
        client.stream("GET", "/v1/reports/focus", params=params) as r,
    ):
        r.raise_for_status()
        for chunk in r.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    rows = lines - 1 if fmt == "csv" else lines - 2  # header / JSON prologue and epilogue
    return time.perf_counter() - t, rows, size


def focus_cpu_ms(fmt: str) -> float:
    """CPU milliseconds (database + this process) of the whole export, as the route streams it."""
    from app.jobs.filters import parse_filters
    from app.reports import focus

    everything = parse_filters(start=None, end=None, params={})
    return cpu_ms(lambda session: sum(len(c) for c in focus.stream(session, everything, fmt)))


def focus_memory(path: str, end: datetime | None) -> tuple[int, int]:
    """(rows, peak traced bytes) of one export path over jobs finished before `end` (None: all).

    Paths: "csv" (the API's one CSV writer over a server-side cursor, what the route streams on
    every database) and "pg-json" (PostgreSQL renders the JSON records through COPY).
    """
    from app.db import session_scope
    from app.jobs.filters import parse_filters
    from app.reports import focus

    filters = parse_filters(start=None, end=end, params={})
    tracemalloc.start()
    lines = 0
    with session_scope() as session:
        chunks: Iterator[str | bytes] = focus.stream(session, filters, path.removeprefix("pg-"))
        for chunk in chunks:
            lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return lines - (2 if path == "pg-json" else 1), peak


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
    from app.db import session_scope
    from app.kit.migrate import upgrade_head
    from app.models import Scope

    upgrade_head(url)
    print(f"PostgreSQL {make_url(url).render_as_string(hide_password=True)}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"seeded {n:,} jobs (+{3 * n:,} tags) with COPY in {seed(url, n):.1f} s")
    with session_scope() as session:
        _, key = keys.create(session, name="bench", scope=Scope.READ)
        size = session.scalar(text("SELECT pg_size_pretty(pg_total_relation_size('jobs'))"))
    print(f"jobs table with indexes and TOAST: {size}")

    with Server() as base:
        report_figures(base, key)
        print(f"\nFOCUS export of every row over HTTP (target < {TARGET_FOCUS_S:.0f} s), "
              f"load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
        for fmt in ("csv", "json"):
            seconds, rows, size_b = focus_http(base, key, fmt)
            cpu_s = focus_cpu_ms(fmt) / 1000
            print(f"  {fmt:<5}{rows:>8,} rows {size_b / 1e6:>7.1f} MB in {seconds:.2f} s "
                  f"({rows / seconds:,.0f} rows/s), {cpu_s:.2f} s CPU")  # fmt: skip

    with session_scope() as session:
        tenth = session.scalar(
            text("SELECT finished_at FROM jobs WHERE act_cost_usd IS NOT NULL "
                 "ORDER BY finished_at OFFSET :k LIMIT 1"), {"k": n // 10}
        )  # fmt: skip
    from app.calibration import evaluation
    from app.calibration import service as calibration

    def fit_once() -> Any:
        with session_scope() as session:
            return calibration.fit_groups(session)

    def evaluate_once() -> Any:
        with session_scope() as session:
            return evaluation.evaluate(session)

    groups, scored = fit_once(), evaluate_once().heldout_jobs
    print(f"\ncalibration fit: {len(groups)} (GPU, method) groups from "
          f"{sum(g.eligible_jobs for g in groups):,} newest succeeded runs in "
          f"{median_s(fit_once, 3) * 1000:.0f} ms; held-out evaluation of "
          f"{scored:,} jobs in {median_s(evaluate_once, 3):.2f} s")  # fmt: skip

    print("\nFOCUS export peak Python memory (tracemalloc) by row count:")
    for path in ("csv", "pg-json"):
        figures = [focus_memory(path, end) for end in (tenth, None)]
        shown = ", ".join(f"{rows:>7,} rows {peak / 1e6:5.2f} MB" for rows, peak in figures)
        print(f"  {path:<11} {shown}")


if __name__ == "__main__":
    main()
