"""The HTTP side of the CLI: one client for a tunecost server, errors printed as the API says."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

DEFAULT_URL = "http://127.0.0.1:8000"  # where `make run` serves (TUNECOST_HOST/TUNECOST_PORT)
HTTP_TIMEOUT_S = 60.0  # an estimate of a large model on a cold server takes seconds, not minutes
err_console = Console(stderr=True)

UrlOption = Annotated[
    str, typer.Option(envvar="TUNECOST_URL", help="the tunecost server (or TUNECOST_URL)")
]
KeyOption = Annotated[
    str | None, typer.Option(help="API key (or TUNECOST_API_KEY)", show_default=False)
]


class Api:
    """GET/POST against one server with one key; any error ends the command with its detail."""

    def __init__(self, *, url: str, key: str | None, timeout: float = HTTP_TIMEOUT_S) -> None:
        secret = key or os.environ.get("TUNECOST_API_KEY")
        if not secret:
            err_console.print("[red]an API key is needed: --key or export TUNECOST_API_KEY[/red]")
            raise typer.Exit(2)
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=timeout,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of a 2xx request; exits 1 (unreachable) or 2 (the API refused)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            err_console.print(f"[red]cannot reach {self.url}: {exc}[/red]")
            raise typer.Exit(1) from None
        if response.status_code >= 400:
            err_console.print(f"[red]{response.status_code}: {_detail(response)}[/red]")
            raise typer.Exit(2)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """GET `path` as JSON."""
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=query).json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST `body` to `path`; the JSON answer."""
        return self.request("POST", path, json=body).json()


def _detail(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text
    detail = str(problem.get("detail", response.text))
    fields = [
        f"{'.'.join(str(part) for part in e.get('loc', []))}: {e.get('msg', '')}"
        for e in problem.get("errors", [])
    ]
    return "; ".join([detail, *fields])


def gib(n_bytes: float | None) -> str:
    """Memory in GiB (2**30 bytes), the unit of the CLI, the demo and the console."""
    return "-" if n_bytes is None else f"{n_bytes / 2**30:,.2f} GiB"


def usd(value: float | None) -> str:
    """Dollars, with cents (four decimals under a dollar: tiny CPU runs cost fractions)."""
    if value is None:
        return "-"
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"
