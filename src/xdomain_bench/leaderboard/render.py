"""The per-protocol tables as markdown, LaTeX (booktabs) and JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from .layout import Cell, Layout, setting_label, split_bold
from .metrics import fmt_stat, header, metric_scale
from .tables import Table


# --- markdown ------------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_cell(cell: Cell) -> str:
    if not cell.bold:
        return _md_escape(cell.text)
    mean, rest = split_bold(cell)
    return f"**{mean}**{_md_escape(rest)}"


def markdown(tables: list[Table], intro: str = "") -> str:
    parts = ["# Leaderboard", ""]
    if intro:
        parts += [intro, ""]
    for table in tables:
        lay = Layout.of(table)
        parts += [f"## {table.title}", "", lay.caption(), ""]
        parts.append("| " + " | ".join(_md_escape(h) for h in lay.headers) + " |")
        n_id = len(lay.id_columns)
        aligns = [":---"] * n_id + ["---:"] * len(table.metrics) + ([":---"] if lay.notes else [])
        parts.append("|" + "|".join(aligns) + "|")
        for line in lay.lines():
            parts.append("| " + " | ".join(_md_cell(c) for c in line.cells) + " |")
        parts.append("")
    return "\n".join(parts)


# --- LaTeX ---------------------------------------------------------------------------------------------------
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "—": "---", "–": "--", "−": "$-$", "→": r"$\rightarrow$",
                  "↔": r"$\leftrightarrow$", "↳": r"$\hookrightarrow$", "Δ": r"$\Delta$", "·": r"$\cdot$"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in [*_LATEX_SPECIAL, *_LATEX_UNICODE]))


def latex_escape(text: str) -> str:
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL.get(m.group(0)) or _LATEX_UNICODE[m.group(0)], text)


def _tex_cell(cell: Cell) -> str:
    if not cell.bold:
        return latex_escape(cell.text)
    mean, rest = split_bold(cell)
    return rf"\textbf{{{latex_escape(mean)}}}{latex_escape(rest)}"


def latex(tables: list[Table]) -> str:
    """One `table` environment per dataset/protocol; needs \\usepackage{booktabs}."""
    parts = ["% xbench leaderboard: one table per dataset/protocol; needs \\usepackage{booktabs}", ""]
    for table in tables:
        lay = Layout.of(table)
        spec = "l" * len(lay.id_columns) + "r" * len(table.metrics) + ("l" if lay.notes else "")
        label = re.sub(r"[^A-Za-z0-9]+", "-", f"{table.dataset}-{table.protocol}").strip("-")
        parts += [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(lay.caption(title=True))}}}",
                  rf"\label{{tab:xbench-{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                  " & ".join(latex_escape(h) for h in lay.headers) + r" \\", r"\midrule"]
        for i, line in enumerate(lay.lines()):
            if line.first_of_setting and i > 0:
                parts.append(r"\midrule")
            parts.append(" & ".join(_tex_cell(c) for c in line.cells) + r" \\")
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)


# --- JSON ----------------------------------------------------------------------------------------------------
def as_json(tables: list[Table], meta: dict[str, Any]) -> str:
    """Every table, row and value; numbers on the tables' (the papers') scale, each metric saying which."""
    out = {**meta, "tables": []}
    for table in tables:
        metrics = []
        for m in table.metrics:
            scale = metric_scale(m)
            metrics.append({"name": m, "header": header(m), "unit": scale.unit, "factor": scale.factor,
                            "digits": scale.digits, "primary": m == table.primary})
        rows = []
        for row in table.rows:
            values = {}
            for m in table.metrics:
                stat, factor = row.values.get(m), metric_scale(m).factor
                entry: dict[str, Any] = {"mean": None, "std": None, "n": None, "text": "", "best": m in row.best}
                if stat is not None:
                    entry.update(mean=stat.mean * factor, std=None if stat.std is None else stat.std * factor,
                                 n=stat.n, text=fmt_stat(m, stat.mean, stat.std, stat.n))
                if m in row.reported:
                    entry.update(reported=row.reported[m] * factor, delta=row.delta(m) * factor)
                values[m] = entry
            rows.append({"kind": row.kind, "method": row.method, "label": row.label(),
                         "implemented": row.implemented, "setting": setting_label(row), "variant": row.variant,
                         "query_domain": row.query_domain, "gallery": row.gallery, "backbone": row.backbone,
                         "budget": row.budget, "selection": row.selection or None, "notes": row.notes,
                         "references": row.references, "values": values})
        out["tables"].append({"dataset": table.dataset, "protocol": table.protocol, "primary_metric": table.primary,
                              "caption": Layout.of(table).caption(), "metrics": metrics, "rows": rows})
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"
