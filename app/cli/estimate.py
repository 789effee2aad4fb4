"""`tunecost estimate`: full fine-tuning, LoRA and QLoRA side by side, from the library or a server.

Without `--url` the estimator runs in this process on the shipped catalog (no server, no
database, no price overrides). With `--url` the request goes to `POST /v1/estimates`; both
paths print the same table from the same JSON shape.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.catalog.prices.staleness import stale_notes
from app.cli.client import Api
from app.cli.tables import QuietOption
from app.config import get_settings

err_console = Console(stderr=True)

_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)
HTTP_TIMEOUT_S = 60.0  # the first estimate of a new architecture on a cold server takes seconds


def parse_amount(text: str) -> float:
    """'20M' -> 2e7; accepts K, M, B/G, T suffixes and plain or scientific numbers."""
    match = _AMOUNT.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not an amount like 20M, 1.5B or 750000")
    return float(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def _model_ref(model: str) -> Any:
    """A catalog id as is; a local folder or config.json file becomes an inline config."""
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return {"config": json.loads(path.read_text(encoding="utf-8"))}
    return model


def build_request(
    *,
    model: str | None,
    tokens: str | None,
    examples: str | None,
    avg_tokens: float | None,
    max_tokens: int | None,
    dataset_id: str | None,
    methods: str,
    gpu: str | None,
    num_gpus: int | None,
    provider: str | None,
    pricing: str,
    seq_len: int | None,
    micro_batch: int,
    epochs: float,
    packing: bool,
    gradient_checkpointing: bool | None,
    lora_r: int,
    target_modules: str,
    variants: int,
    budget: float | None,
    domain_shift: str | None,
) -> dict[str, Any]:
    """The JSON body of POST /v1/estimates from the command-line options."""
    dataset: dict[str, Any]
    if dataset_id:
        dataset = {"dataset_id": dataset_id}
    elif tokens:
        dataset = {"total_tokens": parse_amount(tokens)}
    elif examples and avg_tokens:
        dataset = {"num_examples": int(parse_amount(examples)), "avg_tokens": avg_tokens}
        if max_tokens:
            dataset["max_tokens"] = max_tokens
    else:
        raise typer.BadParameter("give --tokens, or --examples with --avg-tokens, or --dataset-id")
    keyword = target_modules in ("all-linear", "auto")
    targets: Any = target_modules if keyword else target_modules.split(",")
    body: dict[str, Any] = {
        "model": _model_ref(model) if model else None,  # --model-path: set by the caller
        "dataset": dataset,
        "methods": [m.strip() for m in methods.split(",") if m.strip()],
        "training": {"epochs": epochs, "micro_batch_size": micro_batch, "packing": packing},
        "lora": {"r": lora_r, "alpha": 2 * lora_r, "target_modules": targets},
        "hardware": {"gpu": gpu, "num_gpus": num_gpus, "provider": provider, "pricing": pricing},
        "variants": variants,
    }
    if seq_len:
        body["training"]["seq_len"] = seq_len
    if gradient_checkpointing is not None:
        body["training"]["gradient_checkpointing"] = gradient_checkpointing
    if budget is not None:
        body["budget_usd"] = budget
    if domain_shift:
        body["domain_shift"] = domain_shift
    return body


def estimate_locally(body: dict[str, Any]) -> dict[str, Any]:
    """Run the estimator in this process on the shipped catalog; the API's JSON shape."""
    from app.catalog import load_catalog
    from app.catalog.resolve import resolve_model
    from app.estimates import service
    from app.estimates.schemas import EstimateIn

    estimate_in = EstimateIn.model_validate(body)
    analysis, model_ref = resolve_model(estimate_in.model)
    dataset, _ = service.resolve_dataset(None, estimate_in=estimate_in)
    result = service.compute(
        estimate_in=estimate_in,
        analysis=analysis,
        dataset=dataset,
        catalog=load_catalog(),
        calibration=None,
    )
    data = {"model_ref": model_ref, **result.model_dump(mode="json")}
    # the same price-age warnings the server adds (app/estimates/service.py)
    today = datetime.now(UTC).date()
    max_age = get_settings().price_max_age_days
    data["notes"] = [*data["notes"], *stale_notes(result, today=today, max_age_days=max_age)]
    return data


def estimate_remotely(body: dict[str, Any], *, url: str, key: str | None) -> dict[str, Any]:
    """POST the request to a tunecost server; exits with the server's problem detail on error."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(
            url.rstrip("/") + "/v1/estimates", json=body, headers=headers, timeout=HTTP_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        err_console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            problem = response.json()
            detail = problem.get("detail", response.text)
        except ValueError:
            detail = response.text
        err_console.print(f"[red]{response.status_code}: {detail}[/red]")
        raise typer.Exit(2)
    data: dict[str, Any] = response.json()
    return data


def _gb(n_bytes: float | None) -> str:
    # One unit convention across CLI, demo and console: binary GiB (2**30 bytes) for memory.
    if n_bytes is None:
        return "-"
    return f"{n_bytes / 2**30:,.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


def _usd(value: float | None) -> str:
    if value is None:
        return "no price"
    return f"${value:,.2f}" if value < 1000 else f"${value:,.0f}"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _verdict(r: dict[str, Any]) -> str:
    """Fits, in the order that decides: memory, what a worker can run, the budget."""
    if not r["fits"]:
        return "[red]no[/red]"
    if not r.get("runnable", True):
        return "[red]no worker can run it[/red]"
    if r.get("over_budget"):
        return "[red]over budget[/red]"
    return "[yellow]tight[/yellow]" if r.get("tight") else "[green]yes[/green]"


def _levers(r: dict[str, Any]) -> str:
    """The memory levers the plan runs with."""
    training = r.get("training") or {}
    names = [lever["lever"].replace("_", " ") for lever in training.get("levers", [])]
    return ", ".join(names) or "-"


def render(data: dict[str, Any]) -> None:
    """Print the methods side by side and the recommendation with its reasons."""
    console = Console()  # made here so that COLUMNS set by the caller is honoured
    model, dataset = data["model"], data["dataset"]
    console.print(
        f"[bold]{data.get('model_ref', model['architecture'])}[/bold]: {model['architecture']}, "
        f"{_params(model['total_params'])} parameters; {dataset['processed_tokens']:,.0f} "
        f"tokens processed ({dataset['epochs']:g} epoch(s), seq {dataset['seq_len']}); "
        f"catalog version {data['catalog_version']}"
    )
    results = data["results"]
    table = Table(title="Estimate per method", show_lines=False)
    table.add_column("")
    for method in results:
        table.add_column(method, justify="right")
    rows: list[tuple[str, Any]] = [
        ("trainable params", lambda r: _params(r["trainable_params"])),
        ("memory / GPU (must fit)", lambda r: _gb(r["memory"]["per_gpu_bytes"])),
        ("  allocated", lambda r: _gb(r["memory"].get("allocated_bytes"))),
        ("  reserved", lambda r: _gb(r["memory"].get("reserved_bytes"))),
        (
            "  low - high",
            lambda r: f"{_gb(r['memory']['low_bytes'])} - {_gb(r['memory']['high_bytes'])}",
        ),
        ("fits", _verdict),
        ("GPUs", lambda r: f"{r['num_gpus']}x {r['gpu']}"),
        ("GPUs billed", lambda r: str(r["billed_gpus"])),  # whole instances are billed
        ("strategy", lambda r: r["strategy"]),
        ("levers", _levers),
        ("hours", lambda r: f"{r['hours']:,.2f}"),
        ("GPU-hours", lambda r: f"{r['gpu_hours']:,.2f}"),
        (
            "$/GPU-hour",
            lambda r: "-" if r["price_per_gpu_hour"] is None else f"{r['price_per_gpu_hour']:.2f}",
        ),
        ("provider", lambda r: r["provider"] or "-"),
        ("price as of", lambda r: r.get("price_as_of") or "-"),
        ("cost", lambda r: _usd(r["cost_usd"]) if r["fits"] else "- (does not fit)"),
        ("MFU", lambda r: f"{r['mfu']:.0%} ({r['basis']})"),
        ("artifact", lambda r: _gb(r["artifact_bytes"])),
        ("storage cost", lambda r: _usd(r["storage_cost_usd"])),
    ]
    if any(r.get("contracted_cost_usd") is not None for r in results.values()):
        rows.insert(
            rows.index(next(row for row in rows if row[0] == "cost")) + 1,
            (
                "contracted cost",
                lambda r: (
                    _usd(r.get("contracted_cost_usd"))
                    if r.get("contracted_cost_usd") is not None
                    else "list"
                ),
            ),
        )
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results.values()))
    console.print(table)
    rec = data["recommendation"]
    console.print(f"[bold]Recommendation:[/bold] {rec['method'] or 'none of the methods'}")
    for reason in rec["reasons"]:
        console.print(f"  - {reason}")
    for note in data.get("notes", []):
        if note.startswith(("stale price", "rate card")):
            console.print(f"[yellow]{note}[/yellow]")


def estimate(
    model: Annotated[
        str | None, typer.Option(help="catalog id, or a local model folder/config.json")
    ] = None,
    model_path: Annotated[
        str | None,
        typer.Option(help="with --url: a model folder under the server's model roots"),
    ] = None,
    tokens: Annotated[str | None, typer.Option(help="total training tokens, e.g. 20M")] = None,
    examples: Annotated[str | None, typer.Option(help="number of examples, e.g. 50K")] = None,
    avg_tokens: Annotated[float | None, typer.Option(help="mean tokens per example")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="longest example, tokens")] = None,
    dataset_id: Annotated[
        str | None, typer.Option(help="with --url: an uploaded dataset's id or a unique start")
    ] = None,
    methods: Annotated[str, typer.Option(help="comma-separated")] = "full,lora,qlora",
    gpu: Annotated[str | None, typer.Option(help="catalog GPU id; default: all")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="default: fewest that fit")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    pricing: Annotated[str, typer.Option(help="on_demand or spot")] = "on_demand",
    seq_len: Annotated[int | None, typer.Option()] = None,
    micro_batch: Annotated[int, typer.Option()] = 1,
    epochs: Annotated[float, typer.Option()] = 1.0,
    packing: Annotated[bool, typer.Option()] = False,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option(help="default: on where memory needs it (the planner decides)")
    ] = None,
    lora_r: Annotated[int, typer.Option()] = 8,
    target_modules: Annotated[
        str, typer.Option(help="comma-separated, all-linear, or auto (peft's per-model default)")
    ] = "auto",
    variants: Annotated[int, typer.Option(help="task-specific versions to keep")] = 1,
    budget: Annotated[float | None, typer.Option(help="budget in USD")] = None,
    domain_shift: Annotated[str | None, typer.Option(help="low, medium or high")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False,
    url: Annotated[str | None, typer.Option(help="a tunecost server; default: in-process")] = None,
    key: Annotated[str | None, typer.Option(help="API key (or TUNECOST_API_KEY)")] = None,
    quiet: QuietOption = False,
) -> None:
    """Estimate memory, time and cost of full fine-tuning, LoRA and QLoRA side by side.

    With --url the estimate is stored on the server and its id printed (alone with --quiet),
    for `tunecost jobs submit --estimate`.
    """
    if (model is None) == (model_path is None):
        raise typer.BadParameter("give --model or --model-path (one of them)")
    if (model_path or quiet) and not url:
        raise typer.BadParameter("--model-path and --quiet need --url (a stored estimate)")
    if dataset_id and url:  # the server takes whole ids in a body: expand a prefix first
        dataset_id = Api(url=url, key=key).get(f"/v1/datasets/{dataset_id}")["id"]
    body = build_request(
        model=model,
        tokens=tokens,
        examples=examples,
        avg_tokens=avg_tokens,
        max_tokens=max_tokens,
        dataset_id=dataset_id,
        methods=methods,
        gpu=gpu,
        num_gpus=num_gpus,
        provider=provider,
        pricing=pricing,
        seq_len=seq_len,
        micro_batch=micro_batch,
        epochs=epochs,
        packing=packing,
        gradient_checkpointing=gradient_checkpointing,
        lora_r=lora_r,
        target_modules=target_modules,
        variants=variants,
        budget=budget,
        domain_shift=domain_shift,
    )
    if model_path:
        body["model"] = {"path": model_path}
    if url:
        data = estimate_remotely(body, url=url, key=key or os.environ.get("TUNECOST_API_KEY"))
    else:
        data = _local_or_exit(body)
    if quiet:
        typer.echo(data["id"])
    elif as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        render(data)
        if "id" in data:
            Console().print(f"estimate {data['id']}")


def _local_or_exit(body: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from app.errors import AppError

    try:
        return estimate_locally(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        err_console.print(f"[red]invalid request: {where}: {first['msg']}[/red]")
    except AppError as exc:
        err_console.print(f"[red]{exc.detail}[/red]")
    raise typer.Exit(2)
