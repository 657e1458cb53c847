"""Tables as plain text lines, as kubectl and kumactl print them (no colour, no box).

Rendered into a string and then printed, so a closed stdout raises BrokenPipeError in `print`
for `services.cli.main` to handle like every other command's, instead of rich's own exit.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only when a table is drawn (start-up time)
    from rich.table import Table

__all__ = ["print_table", "table_lines"]


def table_lines(table: Table) -> list[str]:
    from rich.console import Console

    out = io.StringIO()
    Console(width=200, file=out, color_system=None).print(table)
    return [line.rstrip() for line in out.getvalue().rstrip("\n").splitlines()]


def print_table(table: Table) -> None:
    for line in table_lines(table):
        print(line)
