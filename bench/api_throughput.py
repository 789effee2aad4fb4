"""Throughput and latency of POST /v1/estimates against GET /v1/health on one real server.

Starts uvicorn as a subprocess on a fresh SQLite database (migrated first) in a temporary
folder, creates a read key, then sends REQUESTS requests to each endpoint from CLIENTS
concurrent clients and prints requests/s, p50 and p99 for both and their ratio (target: the
estimate reaches at least half the health endpoint's throughput). Finally it times the first
estimate of a 70B model of an architecture the server has not built yet.

    .venv/bin/python bench/api_throughput.py [--requests 300] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ESTIMATE = {
    "model": "meta-llama/Llama-2-7b-hf",
    "dataset": {"num_examples": 50000, "avg_tokens": 150, "max_tokens": 1304},
    "training": {"micro_batch_size": 1, "seq_len": 1304, "precision": "bf16_true"},
    "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    "hardware": {"gpu": "A100-40GB"},
}
NEW_ARCH_70B = "Qwen/Qwen2.5-72B"  # qwen2: not built by the server's warm-up (a Llama)
SERVER_START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(base + "/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("server did not become ready")


def _load(
    base: str, method: str, path: str, *, body: Any, headers: dict[str, str], n: int, clients: int
) -> dict[str, float]:
    """Send `n` requests from `clients` threads; requests/s and latency percentiles (ms)."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                r = client.request(method, path, json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if r.status_code >= 400:
                        errors.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{path}: {len(errors)} errors, e.g. HTTP {errors[0]}")
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": n / wall, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


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


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tunecost-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, secret = _prepare(tmp)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp / "server.log"
        proc = _start_server(env, port, log)
        try:
            _wait_ready(base, proc, log)
            headers = {"Authorization": f"Bearer {secret}"}
            start = time.perf_counter()
            first = httpx.post(base + "/v1/estimates", json=ESTIMATE, headers=headers, timeout=300)
            first_s = time.perf_counter() - start
            if first.status_code != 201:
                raise SystemExit(f"estimate failed: {first.status_code} {first.text[:500]}")
            common = {"headers": headers, "n": args.requests, "clients": args.clients}
            _load(base, "GET", "/v1/health", body=None, **common | {"n": 30})  # warm both
            _load(base, "POST", "/v1/estimates", body=ESTIMATE, **common | {"n": 30})
            health = _load(base, "GET", "/v1/health", body=None, **common)
            estimates = _load(base, "POST", "/v1/estimates", body=ESTIMATE, **common)
            new_s, params = _first_new_70b(base, headers)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    ratio = estimates["rps"] / health["rps"]
    print(f"{args.requests} requests per endpoint, {args.clients} concurrent clients, SQLite")
    for name, figures in (("GET /v1/health", health), ("POST /v1/estimates", estimates)):
        print(
            f"  {name:20s} {figures['rps']:7.1f} req/s   p50 {figures['p50_ms']:7.1f} ms"
            f"   p99 {figures['p99_ms']:7.1f} ms"
        )
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"  throughput ratio estimates/health = {ratio:.2f} ({verdict} the 0.5 target)")
    print(f"  first estimate after start (includes the warm-up wait): {first_s:.2f} s")
    print(
        f"  first estimate of a new 70B architecture ({NEW_ARCH_70B}, {params / 1e9:.1f}B, "
        f"uncached config): {new_s:.2f} s ({'under' if new_s < 1 else 'OVER'} the 1 s target)"
    )
    print(json.dumps({"health": health, "estimates": estimates, "ratio": ratio,
                      "first_new_70b_s": new_s}))  # fmt: skip


if __name__ == "__main__":
    main()
