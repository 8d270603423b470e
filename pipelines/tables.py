"""Tables that stay readable on a narrow terminal or in a pipe (80 columns by default).

Rich shrinks a table that is wider than the console by wrapping cells at spaces, and cuts
what still does not fit with an ellipsis (``particip…``), which hides exactly the words a
user needs (a stage name, a file name). :func:`print_table` prints the table when it fits
without cutting anything, and otherwise one wrapped line per row, ``<first cell>: <header>
<value>; ...``, that keeps every word.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

__all__ = ["print_table", "ELLIPSIS"]

ELLIPSIS = "\u2026"  # what rich puts where it cuts a cell


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` on ``console`` at its width, never cutting a cell (see the module
    docstring). Cells and headers are rich markup, as :class:`rich.table.Table` takes them."""
    with console.capture() as cap:
        console.print(table)
    if ELLIPSIS not in cap.get():
        console.print(table)
        return
    if table.title:
        console.print(table.title)
    cols = table.columns
    cells = [list(c.cells) for c in cols]
    for i in range(table.row_count):
        first = str(cells[0][i]) if cols else ""
        rest = "; ".join(f"{c.header} {cells[j][i]}" for j, c in enumerate(cols[1:], 1) if str(cells[j][i]))
        console.print(f"{first}: {rest}" if rest else first, overflow="fold")
