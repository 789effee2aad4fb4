"""The `tunecost` command line."""

from __future__ import annotations

import typer
from rich.console import Console

from app.cli.datasets import datasets_app
from app.cli.estimate import estimate
from app.cli.jobs import jobs_app
from app.cli.keys import bootstrap_admin_key, keys_app
from app.cli.prices import prices_app
from app.cli.report import report
from app.cli.workers import workers
from app.config import get_settings
from devtools.cli import make_tiny_dataset, make_tiny_model

cli = typer.Typer(help="tunecost: estimate, run and meter LLM fine-tunes.", no_args_is_help=True)
cli.add_typer(keys_app, name="keys")
cli.add_typer(prices_app, name="prices")
cli.add_typer(datasets_app, name="datasets")
cli.add_typer(jobs_app, name="jobs")
cli.command("report")(report)
cli.command("estimate")(estimate)
cli.command("workers")(workers)
cli.command("make-tiny-model")(make_tiny_model)
cli.command("make-tiny-dataset")(make_tiny_dataset)
console = Console()


@cli.command()
def migrate() -> None:
    """Bring the database schema to the newest revision (Alembic upgrade head)."""
    from app.kit.migrate import upgrade_head

    upgrade_head()
    console.print("database schema is at head")


@cli.command()
def bootstrap() -> None:
    """Migrate, then create and print an admin key if there is no key yet."""
    from app.kit.migrate import upgrade_head

    upgrade_head()
    if not get_settings().bootstrap_admin_key:
        console.print("TUNECOST_BOOTSTRAP_ADMIN_KEY is off: no key created")
        return
    secret = bootstrap_admin_key()
    if secret:
        console.print(
            "[bold]No API key existed: created an admin key. It is shown once; store it now:[/bold]"
        )
        typer.echo(secret)


if __name__ == "__main__":
    cli()
