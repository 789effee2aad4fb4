"""Tables the CLI prints: ids whole, every other cell wrapped rather than cut.

Rich shortens cells with an ellipsis when a table is wider than the terminal; an id cut that way
cannot be pasted into the next command. Id columns here never wrap and never shrink below their
longest id; other cells fold onto more lines. `--wide` prints each row on one line, however long.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

WideOption = Annotated[
    bool, typer.Option("--wide", help="one line per row, however wide (for grep and copying)")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="print only the id (for scripts: X=$(tunecost ...))")
]
# A console this wide never wraps a table row: rich pads a table to its own width, not this.
WIDE_COLUMNS = 10_000


def console(*, wide: bool = False) -> Console:
    """The console to print on: the terminal's width (COLUMNS), or unbounded with `wide`."""
    return Console(width=WIDE_COLUMNS) if wide else Console()


def id_table(
    headers: Sequence[str], *, id_columns: Sequence[str], title: str | None = None
) -> Table:
    """A table whose `id_columns` are printed whole and whose other cells wrap, never cut."""
    table = Table(title=title)
    for header in headers:
        if header in id_columns:
            table.add_column(header, no_wrap=True, overflow="ignore")
        else:
            table.add_column(header, overflow="fold")
    return table


def fit_ids(table: Table, *, id_columns: Sequence[str]) -> Table:
    """Give each id column the width of its longest cell, so rich shrinks the others instead."""
    for column in table.columns:
        if column.header in id_columns:
            cells = [str(c) for c in column.cells]
            column.min_width = max([len(str(column.header)), *map(len, cells)])
    return table
