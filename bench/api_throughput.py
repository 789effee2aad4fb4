"""Throughput and latency of POST /v1/estimates against GET /v1/health on one real server.

Starts uvicorn as a subprocess on a fresh SQLite database (migrated first) in a temporary
folder, creates a read key, then sends REQUESTS requests to each endpoint from CLIENTS
concurrent clients, in ROUNDS alternating rounds (so both endpoints see the same load on a
shared machine), and prints requests/s, p50 and p99 for both and their ratio (target: the
estimate reaches at least 0.8 of the health endpoint's throughput). The estimates are one
request asked again and again, as a dashboard or CLI does: the server answers it from the
estimate it stored (app/estimates/reuse.py). It then prints the same figures for DISTINCT
requests (each a new estimate, computed and stored), and times the first estimate of a 70B
model of an architecture the server has not built yet.

Every figure is checked before it is printed: all requests answered (201, a body naming one
estimate id for the repeated request, a new id for each distinct one, with the stored row
count to match), else the bench exits non-zero.

    .venv/bin/python bench/api_throughput.py [--requests 1200] [--clients 4] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from served import free_port, start_server, wait_ready

ROOT = Path(__file__).resolve().parent.parent
DATASET = {"num_examples": 50000, "avg_tokens": 150, "max_tokens": 1304}
ESTIMATE = {
    "model": "meta-llama/Llama-2-7b-hf",
    "dataset": DATASET,
    "training": {"micro_batch_size": 1, "seq_len": 1304, "precision": "bf16_true"},
    "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    "hardware": {"gpu": "A100-40GB"},
}
NEW_ARCH_70B = "Qwen/Qwen2.5-72B"  # qwen2: not built by the server's warm-up (a Llama)
TARGET_RATIO = 0.8  # estimates/s over health/s


def _prepare(tmp: Path) -> tuple[dict[str, str], str]:
    """Environment for a fresh embedded deployment, migrated, and a read key for it."""
    env = {
        **os.environ,
        "TUNECOST_DATABASE_URL": f"sqlite:///{tmp / 'tunecost.db'}",
        "TUNECOST_BROKER_URL": f"sqla+sqlite:///{tmp / 'broker.db'}",
        "TUNECOST_STORAGE_ROOT": str(tmp / "storage"),
        "TUNECOST_MODEL_ROOTS": str(tmp / "models"),
        "TUNECOST_BOOTSTRAP_ADMIN_KEY": "false",
    }
    script = (
        "from app.kit.migrate import upgrade_head; upgrade_head()\n"
        "from app.auth import service\nfrom app.db import session_scope\n"
        "from app.models import Scope\n"
        "with session_scope() as s:\n"
        "    _, secret = service.create(s, name='bench', scope=Scope.READ)\n"
        "print(secret)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return env, out.stdout.strip().splitlines()[-1]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    """Latencies (s), wall seconds and response bodies' estimate ids of one endpoint's requests."""

    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Requests/s over the time spent on this endpoint, p50 and p99 in ms."""
        cuts = statistics.quantiles(self.latencies, n=100)
        return {
            "requests": len(self.latencies),
            "rps": len(self.latencies) / self.wall_s,
            "p50_ms": cuts[49] * 1000,
            "p99_ms": cuts[98] * 1000,
            "server_cpu_ms": self.server_cpu_s / len(self.latencies) * 1000,
        }


def _load(
    base: str,
    method: str,
    path: str,
    *,
    bodies: Callable[[int], Any],
    headers: dict[str, str],
    n: int,
    clients: int,
    into: Figures,
    expect: int,
    server: int,
) -> None:
    """Send `n` requests (body `bodies(i)`) from `clients` threads, adding to `into`."""
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = bodies(i)
                start = time.perf_counter()
                r = client.request(method, path, json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    into.latencies.append(elapsed)
                    if r.status_code != expect:
                        errors.append(f"HTTP {r.status_code} {r.text[:200]}")
                    elif method == "POST":  # the estimate's URL, not its 25 kB parsed
                        into.ids.append(r.headers["location"].rsplit("/", 1)[-1])

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0, cpu0 = time.perf_counter(), _cpu_s(server)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    into.wall_s += time.perf_counter() - t0
    into.server_cpu_s += _cpu_s(server) - cpu0
    if errors:
        raise SystemExit(f"{path}: {len(errors)} of {n} requests failed, e.g. {errors[0]}")


def _first_new_70b(base: str, headers: dict[str, str]) -> tuple[float, int]:
    from app.catalog.model_catalog import get_model_config

    config = get_model_config(NEW_ARCH_70B) | {"bench_nonce": uuid.uuid4().hex}  # uncached
    body = ESTIMATE | {"model": {"config": config}}
    start = time.perf_counter()
    r = httpx.post(base + "/v1/estimates", json=body, headers=headers, timeout=120)
    elapsed = time.perf_counter() - start
    if r.status_code != 201:
        raise SystemExit(f"70B estimate failed: {r.status_code} {r.text[:300]}")
    return elapsed, int(r.json()["model"]["total_params"])


def _distinct(i: int) -> dict[str, Any]:
    """A request no other one repeats: a dataset of another size."""
    return ESTIMATE | {"dataset": {**DATASET, "num_examples": 10_000 + i}}


def _stored_estimates(env: dict[str, str]) -> int:
    script = (
        "from sqlalchemy import func, select\nfrom app.db import session_scope\n"
        "from app.models import Estimate\nwith session_scope() as s:\n"
        "    print(s.scalar(select(func.count()).select_from(Estimate)))\n"
    )
    command = [sys.executable, "-c", script]
    out = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def _check(name: str, figures: Figures, n: int) -> None:
    if len(figures.latencies) != n:
        raise SystemExit(f"{name}: {len(figures.latencies)} requests answered of {n}")


def main() -> None:
    """Run the benchmark, check what it measured and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    n, rounds = args.requests, args.rounds
    if n < 100 * rounds:
        raise SystemExit("--requests must be at least 100 per round for a p99")

    with tempfile.TemporaryDirectory(prefix="tunecost-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, secret = _prepare(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp / "server.log"
        proc = start_server(env, port, log)
        try:
            wait_ready(base, proc, log)
            headers = {"Authorization": f"Bearer {secret}"}
            start = time.perf_counter()
            first = httpx.post(base + "/v1/estimates", json=ESTIMATE, headers=headers, timeout=300)
            first_s = time.perf_counter() - start
            if first.status_code != 201:
                raise SystemExit(f"estimate failed: {first.status_code} {first.text[:500]}")
            common = {"headers": headers, "clients": args.clients, "server": proc.pid}
            same = lambda _: ESTIMATE  # noqa: E731
            none = lambda _: None  # noqa: E731
            warm = Figures()
            _load(base, "GET", "/v1/health", bodies=none, n=30, into=warm, expect=200, **common)
            _load(base, "POST", "/v1/estimates", bodies=same, n=30, into=warm, expect=201, **common)
            health, estimates = Figures(), Figures()
            per_round = n // rounds
            for _ in range(rounds):
                _load(base, "GET", "/v1/health", bodies=none, n=per_round, into=health,
                      expect=200, **common)  # fmt: skip
                _load(base, "POST", "/v1/estimates", bodies=same, n=per_round, into=estimates,
                      expect=201, **common)  # fmt: skip
            distinct = Figures()
            distinct_n = max(100, n // 4)
            _load(base, "POST", "/v1/estimates", bodies=_distinct, n=distinct_n, into=distinct,
                  expect=201, **common)  # fmt: skip
            new_s, params = _first_new_70b(base, headers)
            stored = _stored_estimates(env)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    measured = per_round * rounds
    _check("health", health, measured)
    _check("estimates", estimates, measured)
    _check("distinct estimates", distinct, distinct_n)
    if first.headers["location"] != f"/v1/estimates/{first.json()['id']}":
        raise SystemExit(f"Location {first.headers['location']} is not the estimate's URL")
    ids = {first.json()["id"], *warm.ids, *estimates.ids}
    if len(ids) != 1:
        raise SystemExit(f"the repeated estimate was stored {len(ids)} times, not once")
    if len(set(distinct.ids)) != distinct_n:
        raise SystemExit(f"{distinct_n} distinct requests gave {len(set(distinct.ids))} estimates")
    if stored != 1 + distinct_n + 1:  # the repeated one, the distinct ones, the 70B one
        raise SystemExit(f"{stored} estimates stored, expected {2 + distinct_n}")
    h, e, d = health.summary(), estimates.summary(), distinct.summary()
    ratio = e["rps"] / h["rps"]
    load = os.getloadavg()[0]
    print(f"{measured} requests per endpoint in {rounds} alternating rounds, "
          f"{args.clients} concurrent clients, SQLite, load average {load:.1f}")  # fmt: skip
    rows = (("GET /v1/health", h), ("POST /v1/estimates", e), ("  distinct requests", d))
    for name, figures in rows:
        print(
            f"  {name:20s} {figures['requests']:6.0f} req {figures['rps']:7.1f} req/s"
            f"   p50 {figures['p50_ms']:7.1f} ms   p99 {figures['p99_ms']:7.1f} ms"
            f"   server CPU {figures['server_cpu_ms']:5.2f} ms/req"
        )
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"  throughput ratio estimates/health = {ratio:.2f} "
          f"({verdict} the {TARGET_RATIO} target)")  # fmt: skip
    print(f"  estimates stored: {stored} (the repeated request once, {distinct_n} distinct, 1 70B)")
    print(f"  first estimate after start (includes the warm-up wait): {first_s:.2f} s")
    print(
        f"  first estimate of a new 70B architecture ({NEW_ARCH_70B}, {params / 1e9:.1f}B, "
        f"uncached config): {new_s:.2f} s ({'under' if new_s < 1 else 'OVER'} the 1 s target)"
    )
    print(json.dumps({"health": h, "estimates": e, "distinct": d, "ratio": ratio,
                      "first_new_70b_s": new_s}))  # fmt: skip


if __name__ == "__main__":
    main()
