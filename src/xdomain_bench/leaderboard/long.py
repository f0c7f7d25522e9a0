"""Records -> the long leaderboard: one row per (cell, metric)."""

from __future__ import annotations

from typing import Any

import pandas as pd

LONG_COLUMNS = ["method", "dataset", "protocol", "variant", "query_domain", "gallery", "seed", "metric", "value",
                "backbone", "source"]


def long_rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows for every metric of every `ok` record, in a stable order."""
    rows = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        backbone = (rec.get("backbone") or {}).get("name") or rec.get("cell", {}).get("backbone")
        for metric, value in sorted(rec.get("metrics", {}).items()):
            rows.append({
                "method": rec["method"], "dataset": rec["dataset"], "protocol": rec["protocol"],
                "variant": rec["variant"], "query_domain": rec.get("query_domain", ""),
                "gallery": rec.get("gallery", ""), "seed": rec["seed"], "metric": metric, "value": float(value),
                "backbone": backbone, "source": "ours",
            })
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return df.sort_values(["dataset", "protocol", "variant", "query_domain", "gallery", "method", "seed", "metric"],
                          kind="stable").reset_index(drop=True)
