"""`tunecost report`: estimate against actual per group, as the API's report computes it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.cli.client import Api, KeyOption, UrlOption, gib, usd

console = Console()


def _pct(error: dict[str, Any]) -> str:
    if error["mean_pct_error"] is None:
        return "-"
    return f"{error['mean_pct_error']:+.1f}% (MAPE {error['mape_pct']:.1f}%, n={error['n']})"


def report(
    url: UrlOption = "http://127.0.0.1:8000",
    key: KeyOption = None,
    group_by: Annotated[
        str, typer.Option(help="method, gpu, model, provider, status, team, job or tag:<key>")
    ] = "method",
    since: Annotated[str | None, typer.Option(help="jobs finished at or after (ISO 8601)")] = None,
) -> None:
    """Estimate vs actual per group: spend, and the signed error of cost, GPU-hours, memory.

    An error is (estimate - actual) / actual: positive means the estimate was too high.
    """
    data = Api(url=url, key=key).get(
        "/v1/reports/estimate-vs-actual", group_by=group_by, **{"from": since}
    )
    table = Table(
        data["group_by"],
        "jobs",
        "spend",
        "cost error",
        "GPU-hours error",
        "peak memory error",
        title="Estimate vs actual",
    )
    for row in [*data["rows"], data["total"]]:
        is_total = row is data["total"]
        table.add_row(
            "[bold]total[/bold]" if is_total else str(row["group"] or "-"),
            str(row["jobs"]),
            usd(row["spend_usd"]),
            _pct(row["cost_usd"]),
            _pct(row["gpu_hours"]),
            _pct(row["peak_bytes"]),
            end_section=not is_total and row is data["rows"][-1],
        )
    console.print(table)
    peak = data["total"]["peak_bytes"]
    compared = data["total"].get("peak_compared") or {}
    console.print(
        f"mean peak memory: estimated {gib(peak['estimated'])}, actual {gib(peak['actual'])} "
        f"(like with like: allocated vs allocated on {compared.get('allocated', 0)} GPU jobs, "
        f"what must fit vs peak resident set on {compared.get('per_gpu', 0)})"
    )
