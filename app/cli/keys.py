"""`tunecost keys ...`: create, list and revoke API keys directly in the database."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console

from app.auth import service
from app.cli import tables
from app.cli.tables import WideOption, fit_ids, id_table
from app.db import session_scope
from app.errors import AmbiguousId, NotFound
from app.models import Scope
from app.models.base import utcnow

keys_app = typer.Typer(
    help="Manage API keys (talks to the database directly).", no_args_is_help=True
)
console = Console()


@keys_app.command("create")
def create(
    scope: Annotated[Scope, typer.Option(help="read, submit or admin")],
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    team: Annotated[str | None, typer.Option(help="team the key's jobs are charged to")] = None,
    expires_in_days: Annotated[float | None, typer.Option(min=0.001)] = None,
) -> None:
    """Create a key and print its secret once."""
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    with session_scope() as session:
        key, secret = service.create(session, name=name, scope=scope, team=team, expires_at=expires)
        key_id = key.id
    console.print(
        f"created {scope.value} key {key_id} ({name}); store it now, it is not shown again:"
    )
    typer.echo(secret)


@keys_app.command("list")
def list_keys(wide: WideOption = False) -> None:
    """List keys with their ids whole (never their secrets)."""
    table = id_table(
        ("id", "name", "scope", "team", "created", "last used", "revoked"), id_columns=("id",)
    )
    with session_scope() as session:
        for k in service.list_(session):
            table.add_row(
                k.id,
                k.name,
                str(k.scope),
                k.team or "",
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
                "yes" if k.revoked_at else "",
            )
    tables.console(wide=wide).print(fit_ids(table, id_columns=("id",)))


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, or a unique start of it")],
) -> None:
    """Revoke a key at once."""
    try:
        with session_scope() as session:
            revoked = service.revoke(session, key_id=key_id).id
    except (NotFound, AmbiguousId) as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    console.print(f"revoked {revoked}")


def bootstrap_admin_key() -> str | None:
    """Create an admin key when no live key exists; returns its secret, or None."""
    with session_scope() as session:
        if service.count_live(session) > 0:
            return None
        _, secret = service.create(session, name="bootstrap admin", scope=Scope.ADMIN)
        return secret
