"""Records -> the long leaderboard: one row per (cell, metric)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import XBenchError
from ..runner.records import row_identity

LONG_COLUMNS = ["method", "dataset", "protocol", "variant", "query_domain", "gallery", "seed", "metric", "value",
                "backbone", "source"]


def long_rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows for every metric of every `ok` record, in a stable order.

    Two records for one row (method, data, seed, backbone) made with different settings (another override,
    method variant or step budget) are an error: averaging them would mix two configurations."""
    rows, seen = [], {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        backbone = (rec.get("backbone") or {}).get("name") or rec.get("cell", {}).get("backbone")
        key = row_identity(rec["cell"])
        first = seen.setdefault(key, rec)
        if first is not rec and first.get("cell_key") != rec.get("cell_key"):
            raise XBenchError(
                f"two records give the leaderboard row {' · '.join(str(k) for k in key if k not in (None, ''))} "
                f"with different settings:\n  {first.get('cell_key')}\n  {rec.get('cell_key')}\nOne configuration per "
                "row: move the older record (OUT/records/*.json) aside, or write the other run to another --out.")
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
