"""`tunecost jobs list|show|watch|cancel`: follow and stop jobs on a tunecost server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from app.cli.client import Api, KeyOption, UrlOption, gib, usd

jobs_app = typer.Typer(help="List, show, watch and cancel jobs (talks to the API).")
console = Console()
ACTIVE = ("queued", "running", "cancel_requested")
EVENTS_PAGE = 500  # the API's own page bound is larger; one page per poll is enough


@dataclass
class Snapshot:
    """Where a job stands, from its row and its progress events."""

    status: str
    step: int = 0
    total_steps: int | None = None
    tokens_per_s: float | None = None
    accrued_usd: float | None = None
    eta_s: float | None = None

    @property
    def percent(self) -> float:
        """Share of the optimizer steps done, 0-100 (100 once succeeded)."""
        if self.status == "succeeded":
            return 100.0
        return 100.0 * self.step / self.total_steps if self.total_steps else 0.0


@dataclass
class _Progress:
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    after: int = 0


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp()


def eta_seconds(first: dict[str, Any] | None, last: dict[str, Any] | None) -> float | None:
    """Seconds left at the step rate between two progress events (None before two are in)."""
    if not first or not last or not last.get("total_steps") or last["step"] <= first["step"]:
        return None
    elapsed = _at(last) - _at(first)
    if elapsed <= 0:
        return None
    rate = (last["step"] - first["step"]) / elapsed
    return float((last["total_steps"] - last["step"]) / rate)


def snapshot(job: dict[str, Any], seen: _Progress) -> Snapshot:
    """The job's figures: metered actuals once it ended, else its latest progress event."""
    last = seen.last or {}
    if job["status"] not in ACTIVE:
        return Snapshot(
            status=job["status"],
            step=(job.get("actuals") or {}).get("steps") or last.get("step") or 0,
            total_steps=(job.get("actuals") or {}).get("total_steps") or last.get("total_steps"),
            tokens_per_s=job["act_tokens_per_s"],
            accrued_usd=job["act_cost_usd"],
        )
    return Snapshot(
        status=job["status"],
        step=last.get("step") or 0,
        total_steps=last.get("total_steps"),
        tokens_per_s=last.get("tokens_per_s"),
        accrued_usd=last.get("accrued_cost_usd"),
        eta_s=eta_seconds(seen.first, seen.last),
    )


def duration(seconds: float | None) -> str:
    """Seconds as 1h 2m, 3m 4s or 5s ('-' when unknown)."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"


def _follow(api: Api, job_id: str, seen: _Progress) -> None:
    while True:
        page = api.get(f"/v1/jobs/{job_id}/events", after=seen.after, limit=EVENTS_PAGE)
        for event in page["items"]:
            if event["kind"] == "progress":
                seen.first = seen.first or event
                seen.last = event
        if not page["items"] or page["next_after"] is None:
            return
        seen.after = page["next_after"]


def _line(snap: Snapshot, budget: float | None) -> str:
    steps = f"step {snap.step}/{snap.total_steps}" if snap.total_steps else "starting"
    tps = "-" if snap.tokens_per_s is None else f"{snap.tokens_per_s:,.0f}"
    cap = "no cap" if budget is None else usd(budget)
    return (
        f"{snap.status} · {steps} · {snap.percent:.0f}% · {tps} tokens/s · "
        f"ETA {duration(snap.eta_s)} · {usd(snap.accrued_usd)} of {cap}"
    )


@jobs_app.command("list")
def list_jobs(
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    status: Annotated[list[str] | None, typer.Option(help="queued, running, succeeded...")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="key=value, e.g. team=ml (repeat to AND)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
) -> None:
    """The newest jobs with status, estimate and actual cost."""
    api = Api(url=url, key=key)
    tags = {}
    for pair in tag or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: give key=value", param_hint="--tag")
        tags[f"tag.{name}"] = value  # the API's one tag-filter syntax: tag.<key>=<value>
    page = api.get("/v1/jobs", limit=limit, status=status or None, **tags)
    table = Table("id", "status", "method", "model", "GPUs", "est. $", "actual $", "created")
    for job in page["items"]:
        table.add_row(
            job["id"],
            job["status"],
            job["method"],
            job["model_ref"],
            f"{job['num_gpus']}x {job['gpu']}",
            usd(job["est_cost_usd"]),
            usd(job["act_cost_usd"]),
            job["created_at"][:19].replace("T", " "),
        )
    console.print(table)


@jobs_app.command("show")
def show(
    job_id: str,
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON as it is")] = False,
) -> None:
    """One job: what was asked, the estimate and what was really spent."""
    job = Api(url=url, key=key).get(f"/v1/jobs/{job_id}")
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    table = Table("", "estimated", "actual", title=f"job {job['id']}: {job['status']}")
    table.add_row("cost", usd(job["est_cost_usd"]), usd(job["act_cost_usd"]))
    gpu_hours = (job["est_gpu_hours"], job["act_gpu_hours"])
    table.add_row("GPU-hours", *(f"{h:.4f}" if h is not None else "-" for h in gpu_hours))
    table.add_row("peak memory", gib(job["est_peak_bytes"]), gib(job["act_peak_bytes"]))
    table.add_row("artifact", gib(job["est_artifact_bytes"]), gib(job["artifact_bytes"]))
    console.print(
        f"{job['method']} of {job['model_ref']} on {job['num_gpus']}x {job['gpu']} "
        f"({job['provider'] or 'self-hosted'}, ${job['price_per_gpu_hour']:.2f}/GPU-hour); "
        f"budget {usd(job['max_cost_usd'])}; tags {job['tags'] or '-'}"
    )
    console.print(table)
    if job["error"]:
        console.print(f"[red]error: {job['error']}[/red]")


@jobs_app.command("watch")
def watch(
    job_id: str,
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between polls")] = 2.0,
) -> None:
    """Follow a job to its end: percent, tokens/s, ETA and $ against the budget.

    Exits 0 when it succeeded, 3 when it ended otherwise (failed, cancelled, over budget).
    """
    api = Api(url=url, key=key)
    seen = _Progress()
    job = api.get(f"/v1/jobs/{job_id}")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    # On a terminal a live bar; piped (CI, logs) one line per change instead.
    live = console.is_terminal
    printed = ""
    with Progress(*columns, console=console, disable=not live) as bar:
        task = bar.add_task(f"{job['method']} {job['id']}", total=100, detail="")
        while True:
            _follow(api, job_id, seen)
            snap = snapshot(job, seen)
            line = _line(snap, job["max_cost_usd"])
            bar.update(task, completed=snap.percent, detail=line)
            if not live and line != printed:
                console.print(line)
                printed = line
            if job["status"] not in ACTIVE:
                break
            time.sleep(interval)
            job = api.get(f"/v1/jobs/{job_id}")
    console.print(f"job {job_id} {job['status']}" + (f": {job['error']}" if job["error"] else ""))
    if job["status"] != "succeeded":
        raise typer.Exit(3)


@jobs_app.command("cancel")
def cancel(job_id: str, url: UrlOption = "http://127.0.0.1:8000", key: KeyOption = None) -> None:
    """Cancel a job: a queued one at once, a running one within seconds."""
    job = Api(url=url, key=key).post(f"/v1/jobs/{job_id}/cancel")
    console.print(f"job {job_id}: {job['status']}")
