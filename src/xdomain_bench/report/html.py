"""HTML pieces of the report page: leaderboard tables, small frames, run metadata and the page shell. Everything
is inline (style sheet, images as data URIs): the page loads nothing and runs no script."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import pandas as pd

from ..leaderboard.identity import budget_label, record_backbone
from ..leaderboard.layout import Layout, split_bold
from ..leaderboard.tables import Table

esc = html.escape

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th:first-child,td.id{text-align:left}tr.sub td{color:#666;font-size:.9em}
p.caption{font-size:.85em;color:#555}figure{margin:.5em 0}img.chart{max-width:100%}
.grid{margin:.5em 0 1em}.grid h4{margin:.3em 0}
.grid-row{display:flex;align-items:flex-start;gap:4px;margin-bottom:4px}
.grid-row figure{margin:0 8px 0 0;font-size:.7em;text-align:center;width:80px}
.grid-row img{width:72px;height:72px;object-fit:cover;box-sizing:border-box}
.query img{border:4px solid #3366cc}img.hit{border:4px solid #1a9850}img.miss{border:4px solid #d73027}
.legend span{display:inline-block;padding:0 .4em;margin-right:.5em;border:3px solid}
.notes{font-size:.85em;color:#744}
"""


def leaderboard_table(table: Table) -> str:
    """A per-protocol leaderboard as an HTML table (the same cells as leaderboard.md)."""
    lay = Layout.of(table)
    n_id = len(lay.id_columns)
    head = "".join(f"<th>{esc(h)}</th>" for h in lay.headers)
    body = []
    for line in lay.lines():
        cells = []
        for i, cell in enumerate(line.cells):
            cls = ' class="id"' if i < n_id or (lay.notes and i == len(line.cells) - 1) else ""
            if cell.bold:
                mean, rest = split_bold(cell)
                text = f"<b>{esc(mean)}</b>{esc(rest)}"
            else:
                text = esc(cell.text)
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f'<tr class="{line.kind}">{"".join(cells)}</tr>')
    return (f'<p class="caption">{esc(lay.caption())}</p><table class="leaderboard"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def frame_table(mean: pd.DataFrame, std: pd.DataFrame | None = None, index_name: str = "", digits: int = 3) -> str:
    """mean (± std where known) per cell; rows = index, columns = methods."""
    head = f"<th>{esc(index_name)}</th>" + "".join(f"<th>{esc(str(c))}</th>" for c in mean.columns)
    rows = []
    for idx in mean.index:
        cells = [f'<td class="id">{esc(str(idx))}</td>']
        for c in mean.columns:
            m = mean.loc[idx, c]
            s = None if std is None else std.loc[idx, c]
            text = "" if pd.isna(m) else f"{m:.{digits}f}" + ("" if s is None or pd.isna(s) else f" ± {s:.{digits}f}")
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure(uri: str, alt: str, cls: str, attrs: str = "") -> str:
    return f'<figure class="{cls}"{attrs}><img class="chart" src="{uri}" alt="{esc(alt)}"></figure>'


def _distinct(values) -> str:
    counts = Counter(values)
    return ", ".join(f"{esc(str(v))}" + (f" ({n})" if len(counts) > 1 else "") for v, n in sorted(counts.items()))


def metadata(records: list[dict[str, Any]], statuses: dict[str, int]) -> str:
    """Backbones, budgets, devices, precisions, library and code versions over the ok records."""
    rows = [("records", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
            ("backbone", _distinct(_backbone(r) for r in records)),
            ("budget", _distinct(budget_label(r["cell"], r) for r in records)),
            ("device", _distinct(r.get("device") for r in records)),
            ("precision", _distinct(r.get("precision") for r in records)),
            ("code", _distinct(_code(r) for r in records)),
            ("created", esc(f"{min(r.get('created_at', '') for r in records)} … "
                            f"{max(r.get('created_at', '') for r in records)}"))]
    libs = sorted({k for r in records for k in (r.get("library_versions") or {})})
    rows += [(lib, _distinct((r.get("library_versions") or {}).get(lib, "-") for r in records)) for lib in libs]
    body = "".join(f'<tr><td class="id">{esc(k)}</td><td class="id">{v}</td></tr>' for k, v in rows)
    return f'<table class="metadata"><tbody>{body}</tbody></table>'


def _backbone(rec: dict[str, Any]) -> str:
    name, sha = record_backbone(rec)
    return name + (f" (weights sha256 {sha[:12]})" if sha else "")


def _code(rec: dict[str, Any]) -> str:
    code = rec.get("code_version") or {}
    commit = code.get("git_commit")
    if not commit:
        return f"package {code.get('package_version', '?')}"
    return commit[:10] + (" + local changes" if code.get("dirty") else "")


def page(title: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(sections)
            + "\n</body></html>\n")
