"""`make demo`: a newcomer's path from nothing to an estimate-vs-actual report, on the CPU.

Run `make run` in another terminal first. The demo talks to that server over HTTP exactly as the
README's curl walk-through does: it makes a tiny model and dataset, uploads the dataset, prints the
estimate of the three methods, submits a LoRA and a QLoRA job, follows their progress and prints
the report. The key comes from TUNECOST_API_KEY, or a fresh submit key is made in the local
database (the one `make run` serves).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from app.auth import service
from app.config import get_settings
from app.db import session_scope
from app.models import Scope
from devtools.tinymodel import make_tiny_dataset, make_tiny_model

console = Console()
URL = os.environ.get("TUNECOST_URL", "http://127.0.0.1:8000")
DEMO_STEPS = 40  # enough steps for a visible loss curve, a minute or two per job on 2 CPU cores
JOB_TIMEOUT_S = 900
DEMO_KEY_FILE = Path("var/demo/api-key")  # local demo only; TUNECOST_API_KEY wins


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _key() -> str:
    """TUNECOST_API_KEY, else the demo's own key (kept in var/demo, made once)."""
    if key := os.environ.get("TUNECOST_API_KEY"):
        return key
    with session_scope() as session:
        if DEMO_KEY_FILE.exists():
            secret = DEMO_KEY_FILE.read_text().strip()
            if service.authenticate(session, secret=secret) is not None:
                return secret
        _, secret = service.create(session, name="demo", scope=Scope.SUBMIT, team="demo")
    DEMO_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only, like any stored secret; the next run reuses it instead of making another key.
    fd = os.open(DEMO_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    console.print(f"[dim]made a submit key for team 'demo', kept in {DEMO_KEY_FILE}[/dim]")
    return secret


def _check(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        console.print(f"[red]{r.request.method} {r.request.url} -> {r.status_code}[/red] {r.text}")
        sys.exit(1)
    return r.json()


def _estimate_table(est: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("method", "trainable", "peak memory", "fits", "GPU", "hours", "cost", "artifact"):
        table.add_column(col, justify="right" if col not in ("method", "GPU") else "left")
    for method, r in est["results"].items():
        table.add_row(
            method,
            f"{r['trainable_params']:,}",
            _gib(r["memory"]["per_gpu_bytes"]),
            "yes" if r["fits"] else "no",
            # The GPUs paid for can exceed those used: a whole instance is billed.
            f"{r['num_gpus']}x {r['gpu']}"
            + (f" ({r['billed_gpus']} billed)" if r["billed_gpus"] != r["num_gpus"] else ""),
            f"{r['hours']:.3g}",
            _money(r["cost_usd"]),
            f"{r['artifact_bytes'] / 2**20:,.1f} MiB",
        )
    return table


def main() -> None:
    """Walk through the whole loop against a running server."""
    settings = get_settings()
    client = httpx.Client(base_url=URL, timeout=60)
    try:
        client.get("/v1/health")
    except httpx.HTTPError:
        console.print(
            f"[red]No server at {URL}: start it with `make run` in another terminal.[/red]"
        )
        sys.exit(1)
    client.headers["Authorization"] = f"Bearer {_key()}"
    # workers and the schema revision are for callers with a key (the open answer is ok/degraded)
    health = _check(client.get("/v1/health"))
    console.print(
        f"server: {health['workers']['live']} live worker(s), schema {health['schema_revision']}"
    )

    model_dir = settings.resolved_model_roots()[0] / "tiny-llama"
    if not (model_dir / "config.json").exists():
        console.rule("1. a tiny Llama-style model and its tokenizer (random weights, offline)")
        make_tiny_model(model_dir)
    data_file = Path("var/demo/alpaca.jsonl")
    make_tiny_dataset(data_file, n=400, fmt="alpaca")

    console.rule("2. upload the dataset (token statistics with the model's own tokenizer)")
    with data_file.open("rb") as fh:
        ds = _check(
            client.post(
                "/v1/datasets",
                files={"file": (data_file.name, fh, "application/jsonl")},
                data={"name": "demo alpaca", "model_path": str(model_dir)},
            )
        )
    console.print(
        {k: ds.get(k) for k in ("id", "format", "num_examples", "total_tokens", "tokenizer")}
    )

    console.rule("3. what would it cost? the three methods side by side")
    big = _check(
        client.post(
            "/v1/estimates",
            json={
                "model": "meta-llama/Llama-3.1-8B",
                "dataset": {"total_tokens": 20_000_000},
                "hardware": {"gpu": "A100-80GB", "provider": "aws"},
                "variants": 10,
            },
        )
    )
    console.print(_estimate_table(big, "Llama-3.1-8B, 20M tokens, A100-80GB on AWS"))
    console.print(f"recommended: [bold]{big['recommendation']['method']}[/bold]")
    for reason in big["recommendation"]["reasons"]:
        console.print(f"  - {reason}")

    training = {"seq_len": 64, "micro_batch_size": 4, "precision": "fp32", "attention": "sdpa"}
    est = _check(
        client.post(
            "/v1/estimates",
            json={
                "model": {"path": str(model_dir)},
                "dataset": {"dataset_id": ds["id"]},
                "training": training,
                "hardware": {"gpu": "cpu"},
            },
        )
    )
    console.print(_estimate_table(est, "the tiny model on this CPU"))

    console.rule("4. run LoRA and QLoRA for real on the worker, metered")
    jobs = []
    for method in ("lora", "qlora"):
        job = _check(
            client.post(
                "/v1/jobs",
                json={
                    "estimate_id": est["id"],
                    "method": method,
                    "model": {"path": str(model_dir)},
                    "dataset_id": ds["id"],
                    "max_steps": DEMO_STEPS,
                    "max_cost_usd": 5.0,
                    "tags": {"team": "demo", "project": "readme"},
                },
            )
        )
        console.print(f"submitted {method} job {job['id']} -> queue {job['queue']}")
        jobs.append(job["id"])

    deadline = time.monotonic() + JOB_TIMEOUT_S
    last_event: dict[str, int] = {}
    pending = set(jobs)
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            job = _check(client.get(f"/v1/jobs/{job_id}"))
            params = {"after": last_event[job_id]} if job_id in last_event else {}
            events = _check(client.get(f"/v1/jobs/{job_id}/events", params=params))
            for ev in events["items"]:
                last_event[job_id] = ev["id"]
                if ev.get("step") is not None:
                    console.print(
                        f"{job['method']:>5} step {ev['step']}/{ev.get('total_steps')} "
                        f"loss {ev.get('loss') or 0:.3f} {ev.get('tokens_per_s') or 0:,.0f} tok/s "
                        f"cost {_money(ev.get('accrued_cost_usd'))}"
                    )
            if job["status"] in ("succeeded", "failed", "cancelled", "budget_exceeded"):
                error = job.get("error") or ""
                console.print(f"{job['method']} job ended: [bold]{job['status']}[/bold] {error}")
                pending.discard(job_id)
        time.sleep(2)
    if pending:
        console.print(f"[red]jobs still running after {JOB_TIMEOUT_S}s: {sorted(pending)}[/red]")
        sys.exit(1)

    console.rule("5. estimate vs actual")
    table = Table(title="per job")
    columns = ("job", "method", "basis", "est. GPU-s", "act. GPU-s", "error")
    for col in (*columns, "est. start-up s", "act. start-up s", "est. peak", "peak"):
        table.add_column(col)
    for job_id in jobs:
        j = _check(client.get(f"/v1/jobs/{job_id}"))
        est_s, act_s = (j["est_gpu_hours"] or 0) * 3600, (j["act_gpu_hours"] or 0) * 3600
        basis = j["estimate"].get("basis")
        if basis == "calibrated":
            basis = f"calibrated ({j['estimate'].get('calibration_jobs')})"
        table.add_row(
            job_id[:8],
            j["method"],
            str(basis),
            f"{est_s:.1f}",
            f"{act_s:.1f}",
            f"{(est_s - act_s) / act_s * 100:+.0f}%" if act_s else "-",
            f"{j['estimate']['time']['overhead_s']:.1f}",
            _startup(j.get("actuals") or {}),
            _gib(j["est_peak_bytes"]),
            _gib(j["act_peak_bytes"]),
        )
    console.print(table)
    report = _check(
        client.get(
            "/v1/reports/estimate-vs-actual", params={"group_by": "method", "tag.team": "demo"}
        )
    )
    table = Table(title="report grouped by method (team demo)")
    for col in ("method", "jobs", "spend", "cost MAPE %", "GPU-h MAPE %", "peak MAPE %"):
        table.add_column(col)
    for row in report["rows"]:
        table.add_row(
            str(row["group"]),
            str(row["jobs"]),
            _money(row["spend_usd"]),
            f"{row['cost_usd']['mape_pct'] or 0:.1f}",
            f"{row['gpu_hours']['mape_pct'] or 0:.1f}",
            f"{row['peak_bytes']['mape_pct'] or 0:.1f}",
        )
    console.print(table)
    _calibration_summary(client)
    console.print("done: see README.md for the same steps with curl.")


def _startup(actuals: dict[str, Any]) -> str:
    """Seconds the job spent outside its training loop: what the estimate's start-up stands for
    (wall - training loop + the first step's one-time set-up)."""
    wall, train = actuals.get("wall_s"), actuals.get("train_s")
    if wall is None or train is None:
        return "-"
    return f"{wall - train + (actuals.get('warmup_s') or 0.0):.1f}"


def _calibration_summary(client: httpx.Client) -> None:
    """What finished jobs taught the estimator, and its error before and after on held-out jobs."""
    fit = _check(client.get("/v1/calibration"))
    table = Table(title="calibration: from 3 finished jobs per GPU and method")
    for col in ("gpu", "method", "jobs", "used", "overhead s", "floor x", "mfu"):
        table.add_column(col)
    for g in fit["groups"]:
        table.add_row(
            g["gpu"],
            g["method"],
            str(g["time_jobs"]),
            "yes" if g["used_by_estimates"] else "not yet",
            f"{g['run_overhead_s']:.1f}" if g["run_overhead_s"] is not None else "-",
            f"{g['host_scale']:.2f}" if g["host_scale"] is not None else "-",
            f"{g['mfu']:.4f}" if g["mfu"] is not None else "-",
        )
    console.print(table)
    evaluation = _check(client.get("/v1/calibration/evaluation"))
    overall = evaluation.get("overall")
    if overall and overall["gpu_hours"]["n"]:
        q = overall["gpu_hours"]
        console.print(
            f"GPU-hours error on {q['n']} held-out jobs: {q['before_mape_pct']:.0f}% as estimated "
            f"at submit, {q['after_mape_pct']:.0f}% with the calibration fitted on older jobs"
        )
    else:
        console.print("run `make demo` again: calibration needs finished jobs to fit and to test")


if __name__ == "__main__":
    main()
