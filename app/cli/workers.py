"""`tunecost workers`: the live workers and their devices, as /v1/health reports them."""

from __future__ import annotations

import httpx
import typer
from rich.console import Console
from rich.table import Table

from app.cli.client import DEFAULT_URL, HTTP_TIMEOUT_S, UrlOption, err_console

console = Console()


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def workers(url: UrlOption = DEFAULT_URL) -> None:
    """Live workers with their devices total and free; no key needed (GET /v1/health)."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/v1/health", timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    body = response.json()
    if response.status_code != 200:
        err_console.print(f"[red]{response.status_code}: {body.get('detail', response.text)}[/red]")
        raise typer.Exit(1)
    live = body["workers"]
    table = Table("worker", "GPU kind", "devices", "free", "last heartbeat", title="Live workers")
    for node in live["nodes"]:
        table.add_row(
            node["name"],
            node["gpu"],
            str(node["devices_total"]),
            _count(node["devices_free"]),
            node["last_seen_at"],
        )
    console.print(table)
    for kind, devices in sorted(live["devices"].items()):
        console.print(
            f"{kind}: {devices['total']} device(s), {_count(devices['free'])} free; "
            f"the largest worker takes jobs of up to {devices['largest_worker']}"
        )
    if not live["nodes"]:
        console.print("no live worker: jobs wait in their queues until one starts")
