"""Console tables that are never cut: full headers and values whatever the width.

On a terminal the width is the terminal's; piped (CI logs, `| cat`) it is unlimited unless `--width` says
otherwise. A table wider than that is split: the identity columns repeat and the metric columns continue in
the next part. A column that still does not fit folds onto more lines; no text is ever replaced by `…`."""

from __future__ import annotations

import io
import sys
from typing import TextIO

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from .layout import Cell, Layout, split_bold
from .tables import Table

UNLIMITED = 10_000


def make_console(width: int | None = None, file: TextIO | None = None) -> Console:
    """A rich console of `width` columns; without one, the terminal's, or unlimited when not a terminal."""
    stream = file or sys.stdout
    if width is None and not stream.isatty():
        width = UNLIMITED
    return Console(file=stream, width=width, soft_wrap=False, highlight=False)


def new_table(title: str | None, headers: list[str], right: set[int] = frozenset()) -> RichTable:
    table = RichTable(title=Text(title) if title else None, title_justify="left", show_lines=False)
    for i, h in enumerate(headers):  # Text, not str: names and paths are never read as rich markup
        table.add_column(Text(h), justify="right" if i in right else "left", overflow="fold")
    return table


def fits(console: Console, table: RichTable) -> bool:
    """Whether `table` prints at its natural width (measured without the console's own limit)."""
    ruler = Console(file=io.StringIO(), width=UNLIMITED)
    return ruler.measure(table).maximum <= console.width


def _text(cell: Cell, plain: bool) -> Text:
    """Bold for the best value; where styles do not show (piped), a `*` after it instead."""
    if not cell.bold:
        return Text(cell.text)
    mean, rest = split_bold(cell)
    return Text(f"{mean}*{rest}") if plain else Text.assemble((mean, "bold"), rest)


def _chunks(console: Console, lay: Layout, lines) -> list[list[int]]:
    """Metric column indices per part: as many as fit beside the identity (and note) columns, at least one."""
    metrics = list(range(len(lay.table.metrics)))
    parts, current = [], []
    for j in metrics:
        trial = _render(lay, lines, current + [j], None, lay.notes and j == metrics[-1], False)
        if current and not fits(console, trial):
            parts.append(current)
            current = []
        current.append(j)
    parts.append(current)
    return parts


def _render(lay: Layout, lines, metric_idx: list[int], title: str | None, with_note: bool,
            plain: bool) -> RichTable:
    n_id = len(lay.id_columns)
    keep = list(range(n_id)) + [n_id + j for j in metric_idx] + ([len(lay.headers) - 1] if with_note else [])
    right = {i for i, k in enumerate(keep) if n_id <= k < n_id + len(lay.table.metrics)}
    table = new_table(title, [lay.headers[k] for k in keep], right)
    for line in lines:
        if line.first_of_setting and table.row_count:
            table.add_section()
        table.add_row(*(_text(line.cells[k], plain) for k in keep))
    return table


def print_records(console: Console, title: str, headers: list[str], rows: list[list[Text | str]],
                  n_label: int = 1) -> None:
    """A table too wide for even its narrowest useful form: one block per row, the first `n_label` cells as its
    heading and then one `header: value` line per non-empty cell."""
    console.print(Text(title, style="bold"), overflow="fold")
    for cells in rows:
        console.print(Text(" · ".join(str(c) for c in cells[:n_label] if str(c))), overflow="fold")
        for head, cell in zip(headers[n_label:], cells[n_label:]):
            if str(cell):
                console.print(Text.assemble(f"  {head}: ", cell), overflow="fold")


def print_table(console: Console, title: str, headers: list[str], rows: list[list[str]], n_label: int = 1) -> None:
    """A plain table at its natural width if it fits, else as blocks (`print_records`). The title is a line of
    its own: as a table title, rich would wrap it at the table's width (a long golden-file path among them)."""
    table = new_table(None, headers)
    for cells in rows:
        table.add_row(*(Text(c) for c in cells))
    if fits(console, table):
        console.print(Text(title), overflow="fold")
        console.print(table)
    else:
        print_records(console, title, headers, rows, n_label)


def print_tables(tables: list[Table], console: Console) -> None:
    plain = console.color_system is None
    for table in tables:
        lay = Layout.of(table)
        lines = lay.lines()
        if table.metrics and not fits(console, _render(lay, lines, [0], None, False, plain)):
            print_records(console, table.title, lay.headers, [[_text(c, plain) for c in line.cells] for line in lines],
                          len(lay.id_columns))
        else:
            parts = _chunks(console, lay, lines) if table.metrics else [[]]
            for i, idx in enumerate(parts):
                last = i == len(parts) - 1
                title = table.title + (f" (part {i + 1} of {len(parts)})" if len(parts) > 1 else "")
                console.print(_render(lay, lines, idx, title, lay.notes and last, plain))
        caption = lay.caption() + (" * marks the bold values here." if plain else "")
        console.print(Text(caption), overflow="fold")
        console.print()
