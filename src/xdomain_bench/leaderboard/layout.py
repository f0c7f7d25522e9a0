"""What a per-protocol table shows, cell by cell, shared by the markdown, LaTeX and console renderings.

Identity columns appear only where they tell rows apart: the setting when a table holds several, the backbone
and budget when more than one is present, the selection tag when a row carries one. A single backbone or budget
is named in the caption instead. Under an ours row that matches published numbers exactly come a `↳ reported`
row and a `↳ Δ` row (ours minus reported); unmatched published numbers stand in rows of their own."""

from __future__ import annotations

from dataclasses import dataclass

from .identity import IMAGE_ZERO_SHOT, NONSTANDARD, TEST_SELECTED
from .metrics import fmt_number, fmt_stat, header
from .reported import ITR_GALLERY
from .tables import Row, Table


@dataclass
class Cell:
    text: str
    bold: bool = False  # the best value of its column: only the mean is emphasised


@dataclass
class Line:
    kind: str  # "ours", "reported", "sub" (↳ reported / ↳ Δ under an ours row)
    cells: list[Cell]
    first_of_setting: bool = False


def setting_label(row: Row) -> str:
    where = row.query_domain if row.gallery == ITR_GALLERY else f"{row.query_domain} → {row.gallery}"
    return f"{row.variant} · {where}"


@dataclass
class Layout:
    table: Table
    id_columns: list[str]
    notes: bool

    @classmethod
    def of(cls, table: Table) -> Layout:
        cols = ["setting"] if len(table.settings()) > 1 else []
        cols.append("method")
        if len(table.distinct("backbone")) > 1:
            cols.append("backbone")
        if len(table.distinct("budget", ("ours",))) > 1:
            cols.append("budget")
        if table.distinct("selection"):
            cols.append("selection")
        notes = any(r.notes or r.references for r in table.rows)
        return cls(table, cols, notes)

    @property
    def headers(self) -> list[str]:
        return self.id_columns + [header(m) for m in self.table.metrics] + (["note"] if self.notes else [])

    def caption(self, title: bool = False) -> str:
        """What the table holds and what it leaves out of its columns; with `title`, led by the table's name."""
        t = self.table
        bits = [f"Primary metric {t.primary}; rows sorted by it. Mean ± std over seeds (n); — for the std of one "
                "seed. Bold: the best of our rows in each column and setting"]
        if title:
            bits.insert(0, t.title)
        if t.distinct("selection"):
            bits[-1] += (f" (tagged rows are not ranked: {TEST_SELECTED} ones chose their model on the test split, "
                         f"{NONSTANDARD} ones ran on data that differ from the protocol's, '{IMAGE_ZERO_SHOT}' "
                         "ones trained only the text side, so their image embeddings are the frozen model's)")
        if len(t.settings()) == 1 and t.rows:
            bits.append(f"Setting: {setting_label(t.rows[0])}")
        for attr in ("backbone", "budget"):
            kinds = ("ours", "reported") if attr == "backbone" else ("ours",)
            if attr not in self.id_columns and (values := t.distinct(attr, kinds)):
                bits.append(f"{attr.capitalize()}: {values[0]}")
        return ". ".join(bits) + "."

    def lines(self) -> list[Line]:
        out: list[Line] = []
        last_setting = None
        for row in self.table.rows:
            first = row.setting != last_setting
            last_setting = row.setting
            out.append(Line(row.kind, self._id_cells(row, first) + self._value_cells(row) + self._note(row), first))
            if row.reported:
                metrics = self.table.metrics
                out.append(self._sub_line("↳ reported", [fmt_number(m, row.reported[m]) if m in row.reported else ""
                                                         for m in metrics], "; ".join(row.references)))
                out.append(self._sub_line("↳ Δ", [fmt_number(m, d, sign=True) if (d := row.delta(m)) is not None
                                                  else "" for m in metrics], "ours − reported"))
        return out

    def _sub_line(self, label: str, values: list[str], note: str) -> Line:
        ids = [Cell(label if c == "method" else "") for c in self.id_columns]
        return Line("sub", ids + [Cell(v) for v in values] + ([Cell(note)] if self.notes else []))

    def _id_cells(self, row: Row, first: bool) -> list[Cell]:
        values = {"setting": setting_label(row) if first else "", "method": row.label(), "backbone": row.backbone,
                  "budget": row.budget, "selection": row.selection}
        return [Cell(values[c]) for c in self.id_columns]

    def _value_cells(self, row: Row) -> list[Cell]:
        cells = []
        for m in self.table.metrics:
            stat = row.values.get(m)
            text = "" if stat is None else fmt_stat(m, stat.mean, stat.std, stat.n)
            cells.append(Cell(text, m in row.best))
        return cells

    def _note(self, row: Row) -> list[Cell]:
        if not self.notes:
            return []
        text = "; ".join(row.notes + (row.references if not row.reported else []))
        return [Cell(text)]


def split_bold(cell: Cell) -> tuple[str, str]:
    """(the emphasised mean, the rest) of a bold cell: `0.6123` and ` ± 0.0040 (3)`."""
    mean, sep, rest = cell.text.partition(" ")
    return mean, sep + rest
