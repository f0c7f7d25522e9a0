"""`xbench report DIR [--out FILE.html]`: one self-contained HTML page over a run folder: leaderboard tables and
a bar chart per protocol, per-domain and per-class AP, retrieval example grids, training curves and the runs'
metadata."""

from __future__ import annotations

import argparse
import html
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io_utils import atomic_write_text
from ..paths import reported_csv
from . import charts
from .breakdown import method_group_ap, widest_spread
from .collect import RunFolder, collect, setting_title
from .grids import Thumbnails, grid_html, pick_queries
from .html import figure, frame_table, leaderboard_table, metadata, page

esc = html.escape


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run folder",
                       description="Read DIR/records (and the per-query results and training logs beside them) "
                                   "and write one HTML page that needs no network: leaderboards, charts, per-class "
                                   "AP, retrieval examples, training curves and run metadata.")
    p.add_argument("dir", help="a run folder holding records/")
    p.add_argument("--out", help="the HTML file to write (default: DIR/report.html)")
    p.add_argument("--data-root", help="where the datasets live now, for the thumbnails (default: the data root "
                                       "each cell ran on)")
    p.add_argument("--no-reported", action="store_true", help="leave published numbers out of the tables")
    p.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    dest = Path(args.out) if args.out else out / "report.html"
    if dest.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out {dest} should name an .html file")
    if args.data_root and not Path(args.data_root).is_dir():
        raise ConfigError(f"--data-root {args.data_root} is not a folder")
    path = build_report(out, dest, data_root=args.data_root, reported=not args.no_reported)
    print(f"wrote {path}")
    return 0


def build_report(out: str | Path, dest: str | Path | None = None, *, data_root: str | None = None,
                 reported: bool = True) -> Path:
    """Write the report of run folder `out` to `dest` (default OUT/report.html); returns its path."""
    from ..leaderboard.cli import build_leaderboard

    out = Path(out)
    folder = collect(out)
    board = build_leaderboard(out, reported_csv() if reported else None)
    dest = Path(dest) if dest else out / "report.html"
    thumbs = Thumbnails()
    per_query = {setting: _per_query_by_method(folder, methods) for setting, methods in folder.by_setting().items()}
    sections = [f"<h1>xbench report</h1><p>{folder.n_records} records in <code>{esc(str(out))}</code>. "
                'Sections: <a href="#leaderboard">leaderboard</a> · <a href="#breakdown">per-domain and per-class '
                'AP</a> · <a href="#examples">retrieval examples</a> · <a href="#curves">training curves</a> · '
                '<a href="#metadata">run metadata</a>.</p>',
                _leaderboard(board.tables), _breakdown(per_query), _examples(per_query, folder, thumbs, data_root),
                _curves(folder), '<h2 id="metadata">Run metadata</h2>'
                + metadata([r.record for r in folder.runs], folder.statuses)]
    notes = folder.notes + [f"image not found or unreadable: {p}" for p in thumbs.missing[:20]]
    if notes:
        sections.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    atomic_write_text(dest, page(f"xbench report: {out}", sections))
    return dest


def _leaderboard(tables) -> str:
    parts = ['<h2 id="leaderboard">Leaderboard</h2><p>One table per dataset/protocol (as in leaderboard.md), and '
             "below it the same numbers as bars: mean over seeds, the standard deviation as the error bar, "
             "zero-shot as a dashed line.</p>"]
    for table in tables:
        parts.append(f"<h3>{esc(table.title)}</h3>" + leaderboard_table(table))
        uri = charts.protocol_bars(table)
        if uri:
            parts.append(figure(uri, f"bar chart of {table.title}", "protocol-chart",
                                f' data-protocol="{esc(table.dataset)}/{esc(table.protocol)}"'))
    return "\n".join(parts)


def _per_query_by_method(folder: RunFolder, methods: dict) -> dict[str, list[tuple[int, dict]]]:
    """Each method's (seed, per-query results) of one setting, read once for every section that shows them."""
    out = {}
    for method, runs in methods.items():
        found = [(r.seed, pq) for r in runs if (pq := folder.per_query(r)) is not None]
        if found:
            out[method] = found
    return out


def _breakdown(per_query: dict) -> str:
    parts = ['<h2 id="breakdown">Per-domain and per-class AP</h2><p>From the per-query results saved with each '
             "record: mean AP of the queries of each query domain and class, averaged over seeds (± std). Shown: "
             "the classes where the methods' AP differs most.</p>"]
    for setting, by_method in per_query.items():
        pqs = {m: [pq for _, pq in found] for m, found in by_method.items()}
        if not pqs:
            continue
        title = setting_title(setting)
        dom_mean, dom_std = method_group_ap(pqs, "query_domain")
        cls_mean, cls_std = method_group_ap(pqs, "query_class_name")
        shown = widest_spread(cls_mean)
        parts.append(f"<h3>{esc(title)}</h3>" + frame_table(dom_mean, dom_std, "query domain")
                     + figure(charts.class_bars(shown, f"per-class AP: {title}"), f"per-class AP, {title}",
                              "class-chart")
                     + frame_table(shown, cls_std.loc[shown.index], "class"))
    if len(parts) == 1:
        parts.append("<p>No per-query results saved (image-text cells, or runs with --per-query-top-k 0).</p>")
    return "\n".join(parts)


def _examples(per_query: dict, folder: RunFolder, thumbs: Thumbnails, data_root: str | None) -> str:
    parts = ['<h2 id="examples">Retrieval examples</h2><p class="legend">The same seeded queries under every method '
             '(its first seed): <span style="border-color:#3366cc">query</span> then its top gallery items, '
             '<span style="border-color:#1a9850">relevant</span> <span style="border-color:#d73027">not '
             "relevant</span> (relevant: same class).</p>"]
    for setting, found in per_query.items():
        if not found:
            continue
        ref = next(iter(found.values()))[0][1]
        queries = pick_queries(len(ref["ap"]))
        grids = []
        for method, runs in found.items():
            seed, pq = runs[0]
            if not np.array_equal(pq["query_relpath"], ref["query_relpath"]):
                folder.notes.append(f"{method} in {setting_title(setting)}: other queries than its peers; no grid")
                continue
            grids.append(grid_html(method, seed, pq, queries, thumbs, data_root))
        parts.append(f'<h3>{esc(setting_title(setting))}</h3><div class="grids">{"".join(grids)}</div>')
    return "\n".join(parts)


def _curves(folder: RunFolder) -> str:
    parts = ['<h2 id="curves">Training curves</h2><p>Per method (first seed), from the CSV training logs under '
             "the run folder: loss terms, learning rate and the validation selection metric, phases one after "
             "another.</p>"]
    for setting, methods in folder.by_setting().items():
        logs = {m: logs for m, runs in methods.items() if (logs := folder.training_logs(runs[0]))}
        uri = charts.training_curves(logs, setting_title(setting)) if logs else None
        if uri:
            parts.append(f"<h3>{esc(setting_title(setting))}</h3>" + figure(uri, "training curves", "curve-chart"))
    if len(parts) == 1:
        parts.append("<p>No training logs found (zero-shot only, or runs made without a CSV logger).</p>")
    return "\n".join(parts)
