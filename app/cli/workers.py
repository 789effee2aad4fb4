"""`tunecost workers`: the live workers and their devices, as /v1/health reports them."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from app.cli.client import DEFAULT_URL, Api, KeyOption, UrlOption

console = Console()


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def workers(url: UrlOption = DEFAULT_URL, key: KeyOption = None) -> None:
    """Live workers with their devices total and free (GET /v1/health with any key)."""
    live = Api(url=url, key=key).get("/v1/health")["workers"]
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
