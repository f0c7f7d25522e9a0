"""The wide leaderboard: method rows × dataset/protocol/metric columns, `mean ± std (n)` over seeds,
reported numbers beside ours with the delta, and n/a or missing cells shown, never silently absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import XBenchError

GROUP = ["dataset", "protocol", "variant", "query_domain", "gallery", "metric"]
REPORTED_COLUMNS = ["method", "dataset", "protocol", "query_domain", "gallery", "metric", "value", "backbone", "source"]
PERCENT_METRICS = ("R@", "i2t_", "t2i_", "RSUM", "mean_R@")


def read_reported(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise XBenchError(f"reported-numbers file not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REPORTED_COLUMNS if c not in df.columns]
    if missing:
        raise XBenchError(f"{path} lacks columns {missing}; expected header {','.join(REPORTED_COLUMNS)}")
    df["value"] = df["value"].astype(float)
    return df


def add_domain_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the mean over held-out query domains where a protocol has several (e.g. DomainNet settings)."""
    keys = ["method", "dataset", "protocol", "variant", "gallery", "seed", "metric", "backbone"]
    parts = []
    for key, grp in long.groupby(keys, dropna=False, sort=True):
        domains = sorted(set(grp["query_domain"]))
        if len(domains) > 1:
            row = dict(zip(keys, key))
            row.update(query_domain=f"average({len(domains)})", value=float(grp["value"].mean()), source="ours")
            parts.append(row)
    if not parts:
        return long
    return pd.concat([long, pd.DataFrame(parts)], ignore_index=True)


def _fmt(mean: float, std: float, n: int, metric: str) -> str:
    scale, digits = (1.0, 2) if metric.startswith(PERCENT_METRICS) and mean > 1.0 else (1.0, 4)
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f} ({n})"


def column_name(row: pd.Series | dict[str, Any]) -> str:
    return "/".join(str(row[k]) for k in GROUP)


def wide_table(long: pd.DataFrame, status: list[dict[str, Any]], reported: pd.DataFrame | None) -> pd.DataFrame:
    """Method rows; one column per (dataset, protocol, variant, query domain, gallery, metric)."""
    ours = long[long["source"] == "ours"]
    cells: dict[tuple[str, str], str] = {}
    means: dict[tuple[str, str], float] = {}
    for (method, *rest), grp in ours.groupby(["method", *GROUP], sort=True):
        col = "/".join(str(v) for v in rest)
        vals = grp["value"].to_numpy(dtype=float)
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        cells[(method, col)] = _fmt(float(vals.mean()), std, len(vals), rest[-1])
        means[(method, col)] = float(vals.mean())
    notes: dict[tuple[str, str], list[str]] = {}
    for st in status:  # n/a, failed and missing cells, in the primary-metric column of their setting
        notes.setdefault((st["method"], st["column"]), [])
        if st["text"] not in notes[(st["method"], st["column"])]:
            notes[(st["method"], st["column"])].append(st["text"])
    for key, texts in notes.items():  # beside the seeds that did finish, if any
        cells[key] = "; ".join([cells[key], *texts] if key in cells else texts)
    if reported is not None and len(reported):
        for _, r in reported.iterrows():
            matches = [c for (m, c) in means if m == r["method"] and _reported_matches(c, r)]
            for col in matches or [_reported_column(r)]:
                cells[(r["method"], f"{col} [reported]")] = f"{r['value']:.4f}"
                if (r["method"], col) in means:
                    ours_v = means[(r["method"], col)]
                    rep = r["value"] / 100.0 if r["value"] > 1.0 and ours_v <= 1.0 else r["value"]
                    cells[(r["method"], f"{col} [delta]")] = f"{ours_v - rep:+.4f}"
    methods = sorted({m for m, _ in cells})
    columns = sorted({c for _, c in cells})
    table = pd.DataFrame("", index=methods, columns=columns)
    for (m, c), text in cells.items():
        table.loc[m, c] = text
    table.index.name = "method"
    return table.reset_index()


def _reported_column(r: pd.Series) -> str:
    return "/".join([r["dataset"], r["protocol"], "paper", r["query_domain"], r["gallery"], r["metric"]])


def _reported_matches(col: str, r: pd.Series) -> bool:
    dataset, protocol, _variant, query_domain, gallery, metric = col.split("/", 5)
    if (dataset, protocol, metric) != (r["dataset"], r["protocol"], r["metric"]):
        return False
    rq = r["query_domain"]
    q_ok = query_domain == rq or (rq.startswith("average") and query_domain.startswith("average"))
    g_ok = gallery == r["gallery"] or r["gallery"] in ("photo", "real", "captions", "images")
    return q_ok and g_ok
