"""Static charts for the report, drawn with matplotlib's Agg canvas (no display, no pyplot state) and returned
as PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..leaderboard.layout import setting_label
from ..leaderboard.metrics import header, metric_scale
from ..leaderboard.tables import Row, Table
from .collect import ZERO_SHOT

MAX_METRICS = 6
ZS_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.5}


def data_uri(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label(row: Row, table: Table) -> str:
    bits = [row.method]
    if len(table.distinct("backbone", ("ours",))) > 1:
        bits.append(row.backbone)
    if len(table.distinct("budget", ("ours",))) > 1:
        bits.append(row.budget)
    if row.selection:
        bits.append(row.selection)
    return " · ".join(bits)


def protocol_bars(table: Table) -> str | None:
    """One panel per setting: the table's metrics side by side, a bar per method (mean, std over seeds as the
    error bar), zero-shot as a dashed reference line over each metric; None when the table has no rows of ours."""
    ours = [r for r in table.rows if r.kind == "ours" and r.values]
    settings = list(dict.fromkeys(r.setting for r in ours))
    if not ours:
        return None
    metrics = table.metrics[:MAX_METRICS]
    fig = Figure(figsize=(max(6.0, 1.6 * len(metrics) + 2), 3.2 * len(settings)))
    for i, setting in enumerate(settings):
        ax = fig.add_subplot(len(settings), 1, i + 1)
        rows = [r for r in ours if r.setting == setting]
        bars = [r for r in rows if r.method != ZERO_SHOT]
        width = 0.8 / max(1, len(bars))
        x = np.arange(len(metrics))
        for j, row in enumerate(bars):
            stats = [row.values.get(m) for m in metrics]
            mean = [s.mean * metric_scale(m).factor if s else np.nan for s, m in zip(stats, metrics)]
            err = [(s.std or 0.0) * metric_scale(m).factor if s else 0.0 for s, m in zip(stats, metrics)]
            ax.bar(x - 0.4 + width * (j + 0.5), mean, width, yerr=err, capsize=3, label=_label(row, table))
        for row in (r for r in rows if r.method == ZERO_SHOT):
            drawn = [(xi, m) for xi, m in zip(x, metrics) if m in row.values]
            for n, (xi, m) in enumerate(drawn):
                ax.hlines(row.values[m].mean * metric_scale(m).factor, xi - 0.45, xi + 0.45,
                          label=_label(row, table) if n == 0 else None, **ZS_STYLE)
        ax.set_xticks(x, [header(m) for m in metrics])
        ax.set_title(f"{table.title} · {setting_label(rows[0])}", fontsize=9)
        ax.set_ylabel("value (table scale)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return data_uri(fig)


def class_bars(frame: pd.DataFrame, title: str) -> str:
    """Horizontal grouped bars: one group per class (rows of `frame`), one bar per method (columns), AP."""
    fig = Figure(figsize=(7.5, 0.35 * len(frame) * max(1, len(frame.columns)) / 2 + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(frame))
    h = 0.8 / max(1, len(frame.columns))
    for j, method in enumerate(frame.columns):
        ax.barh(y - 0.4 + h * (j + 0.5), frame[method].to_numpy(dtype=float), h, label=method)
    ax.set_yticks(y, list(frame.index))
    ax.invert_yaxis()
    ax.set_xlabel("mean AP of the class's queries")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return data_uri(fig)


def _groups(frame: pd.DataFrame) -> dict[str, list[str]]:
    cols = [c for c in frame.columns if c not in ("step", "epoch") and pd.api.types.is_numeric_dtype(frame[c])]
    out: dict[str, list[str]] = {"training loss": [], "learning rate": [], "validation": []}
    for c in cols:
        key = "validation" if c.startswith("val") else "learning rate" if "lr" in c.lower() else "training loss"
        out[key].append(c)
    return {k: v for k, v in out.items() if v}


def training_curves(logs: dict[str, list[tuple[str, pd.DataFrame]]], title: str) -> str | None:
    """Per method (its first seed's logs, phase after phase): loss terms, learning rate and validation metric
    against the step; None when there is no log."""
    panels = sorted({g for runs in logs.values() for _, f in runs for g in _groups(f)},
                    key=["training loss", "learning rate", "validation"].index)
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels) + 1.5, 3.2))
    axes = {p: fig.add_subplot(1, len(panels), i + 1) for i, p in enumerate(panels)}
    for method, runs in logs.items():
        offset = 0
        for phase, frame in runs:
            for panel, cols in _groups(frame).items():
                for c in cols:
                    part = frame[["step", c]].dropna()
                    name = " · ".join(b for b in (method, phase, c) if b)
                    axes[panel].plot(part["step"] + offset, part[c], marker="." if len(part) < 20 else None,
                                     label=name)
            offset += int(frame["step"].max()) + 1
    for panel, ax in axes.items():
        ax.set_title(f"{panel}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return data_uri(fig)
