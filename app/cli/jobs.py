"""`tunecost jobs list|show|watch|cancel`: follow and stop jobs on a tunecost server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from app.cli.client import Api, KeyOption, UrlOption, gib, usd
from app.cli.tables import QuietOption, WideOption, console, fit_ids, id_table

jobs_app = typer.Typer(
    help="Submit, list, show, watch and cancel jobs (talks to the API). Wherever a job id is "
    "asked for, a unique start of it will do."
)
ACTIVE = ("queued", "running", "cancel_requested")
JobIdArgument = Annotated[str, typer.Argument(help="the job's id, or a unique start of it")]
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
    wide: WideOption = False,
) -> None:
    """The newest jobs with status, estimate and actual cost (ids whole)."""
    api = Api(url=url, key=key)
    # the API's one tag-filter syntax: tag.<key>=<value>
    tags = {f"tag.{name}": value for name, value in _tags(tag).items()}
    page = api.get("/v1/jobs", limit=limit, status=status or None, **tags)
    table = id_table(
        ("id", "status", "method", "model", "GPUs", "est. $", "actual $", "created"),
        id_columns=("id",),
    )
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
    console(wide=wide).print(fit_ids(table, id_columns=("id",)))


@jobs_app.command("show")
def show(
    job_id: JobIdArgument,
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON as it is")] = False,
) -> None:
    """One job: what was asked, the estimate and what was really spent."""
    job = Api(url=url, key=key).get(f"/v1/jobs/{job_id}")
    out = console()
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    table = Table("", "estimated", "actual", title=f"job {job['id']}: {job['status']}")
    table.add_row("cost", usd(job["est_cost_usd"]), usd(job["act_cost_usd"]))
    gpu_hours = (job["est_gpu_hours"], job["act_gpu_hours"])
    table.add_row("GPU-hours", *(f"{h:.4f}" if h is not None else "-" for h in gpu_hours))
    # memory like with like: each estimated figure beside the metered one of the same quantity
    on_cpu = job.get("act_peak_kind") == "cpu_rss"
    table.add_row(
        "peak memory allocated",
        gib(job.get("est_allocated_bytes")),
        "-" if on_cpu else gib(job["act_peak_bytes"]),
    )
    table.add_row(
        "peak memory reserved",
        gib(job.get("est_reserved_bytes")),
        gib(job.get("act_reserved_bytes")),
    )
    table.add_row(
        "peak memory per GPU (must fit)",
        gib(job["est_peak_bytes"]),
        gib(job["act_peak_bytes"]) + " (process RSS)"
        if on_cpu
        else gib(job.get("act_device_peak_bytes")),
    )
    table.add_row("artifact", gib(job["est_artifact_bytes"]), gib(job["artifact_bytes"]))
    out.print(
        f"{job['method']} of {job['model_ref']} on {job['num_gpus']}x {job['gpu']} "
        f"({job['provider'] or 'self-hosted'}, ${job['price_per_gpu_hour']:.2f}/GPU-hour); "
        f"budget {usd(job['max_cost_usd'])}; tags {job['tags'] or '-'}"
    )
    out.print(table)
    if job["error"]:
        out.print(f"[red]error: {job['error']}[/red]")


@jobs_app.command("watch")
def watch(
    job_id: JobIdArgument,
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
    job_id = job["id"]  # the whole id, if a prefix was given
    out = console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    # On a terminal a live bar; piped (CI, logs) one line per change instead.
    live = out.is_terminal
    printed = ""
    with Progress(*columns, console=out, disable=not live) as bar:
        task = bar.add_task(f"{job['method']} {job['id']}", total=100, detail="")
        while True:
            _follow(api, job_id, seen)
            snap = snapshot(job, seen)
            line = _line(snap, job["max_cost_usd"])
            bar.update(task, completed=snap.percent, detail=line)
            if not live and line != printed:
                out.print(line)
                printed = line
            if job["status"] not in ACTIVE:
                break
            time.sleep(interval)
            job = api.get(f"/v1/jobs/{job_id}")
    out.print(f"job {job_id} {job['status']}" + (f": {job['error']}" if job["error"] else ""))
    if job["status"] != "succeeded":
        raise typer.Exit(3)


@jobs_app.command("cancel")
def cancel(
    job_id: JobIdArgument, url: UrlOption = "http://127.0.0.1:8000", key: KeyOption = None
) -> None:
    """Cancel a job: a queued one at once, a running one within seconds."""
    job = Api(url=url, key=key).post(f"/v1/jobs/{job_id}/cancel")
    console().print(f"job {job['id']}: {job['status']}")


def _tags(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: give key=value", param_hint="--tag")
        out[name] = value
    return out


def submit_body(
    *,
    api: Api,
    method: str,
    estimate: str | None,
    model: str | None,
    model_path: str | None,
    dataset: str | None,
    gpu: str | None,
    num_gpus: int | None,
    provider: str | None,
    seq_len: int | None,
    micro_batch: int | None,
    max_steps: int | None,
    max_cost: float | None,
    tags: dict[str, str],
) -> dict[str, Any]:
    """The body of POST /v1/jobs; id prefixes are expanded to whole ids by the server first."""
    body: dict[str, Any] = {"method": method, "tags": tags}
    if estimate:
        body["estimate_id"] = api.get(f"/v1/estimates/{estimate}")["id"]
    elif not (model or model_path) or not dataset:
        raise typer.BadParameter("give --estimate, or --model/--model-path with --dataset")
    if model and model_path:
        raise typer.BadParameter("give --model or --model-path, not both")
    if model_path:
        body["model"] = {"path": model_path}
    elif model:
        body["model"] = {"hub_id": model}
    if dataset:
        body["dataset_id"] = api.get(f"/v1/datasets/{dataset}")["id"]
    hardware = {"gpu": gpu, "num_gpus": num_gpus, "provider": provider}
    if any(v is not None for v in hardware.values()):
        body["hardware"] = {k: v for k, v in hardware.items() if v is not None}
    training = {"seq_len": seq_len, "micro_batch_size": micro_batch}
    if any(v is not None for v in training.values()):
        body["training"] = {k: v for k, v in training.items() if v is not None}
    if max_steps is not None:
        body["max_steps"] = max_steps
    if max_cost is not None:
        body["max_cost_usd"] = max_cost
    return body


@jobs_app.command("submit")
def submit(
    method: Annotated[str, typer.Option(help="full, lora or qlora")],
    estimate: Annotated[
        str | None, typer.Option(help="a stored estimate's id (or a unique start of it)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="a hub id such as a catalog model's (from the hub cache)")
    ] = None,
    model_path: Annotated[
        str | None, typer.Option(help="a model folder under the server's model roots")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="an uploaded dataset's id (or a unique start of it)")
    ] = None,
    gpu: Annotated[str | None, typer.Option(help="catalog GPU id, e.g. cpu or H100-80GB")] = None,
    num_gpus: Annotated[int | None, typer.Option(min=1)] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    seq_len: Annotated[int | None, typer.Option(min=1)] = None,
    micro_batch: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="stop after this many steps")] = None,
    max_cost: Annotated[float | None, typer.Option(help="budget in USD; stops the job there")] = (
        None
    ),
    tag: Annotated[list[str] | None, typer.Option(help="key=value (repeat)")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="the same key and options answer the same job again")
    ] = None,
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    quiet: QuietOption = False,
) -> None:
    """Submit a fine-tune: a stored estimate and a method, or the model, dataset and hardware."""
    api = Api(url=url, key=key)
    body = submit_body(
        api=api,
        method=method,
        estimate=estimate,
        model=model,
        model_path=model_path,
        dataset=dataset,
        gpu=gpu,
        num_gpus=num_gpus,
        provider=provider,
        seq_len=seq_len,
        micro_batch=micro_batch,
        max_steps=max_steps,
        max_cost=max_cost,
        tags=_tags(tag),
    )
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = api.request("POST", "/v1/jobs", json=body, headers=headers).json()
    if quiet:
        typer.echo(job["id"])
        return
    console().print(
        f"job {job['id']} {job['status']}: {job['method']} of {job['model_ref']} on "
        f"{job['num_gpus']}x {job['gpu']}, estimated {usd(job['est_cost_usd'])} "
        f"(budget {usd(job['max_cost_usd'])}); follow it with: tunecost jobs watch {job['id']}"
    )
