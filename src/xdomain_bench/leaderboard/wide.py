"""The wide leaderboard CSV: one row per table row (ours or reported), numbers only, on the records' scale.

Per metric: `<metric>` (mean over seeds), `<metric> std` (empty for one seed), `<metric> n`; where any published
number matched one of our rows exactly, also `<metric> reported` and `<metric> delta` (ours − reported).
A cell without metrics (n/a, failed, missing) is a row with its reason under `note`, never silently absent."""

from __future__ import annotations

import pandas as pd

from .tables import Table, all_metrics

ID_COLUMNS = ["dataset", "protocol", "variant", "query_domain", "gallery", "method", "source", "implemented",
              "backbone", "budget", "selection"]


def wide_table(tables: list[Table]) -> pd.DataFrame:
    metrics = all_metrics(tables)
    matched = {m for t in tables for r in t.rows for m in r.reported}
    columns = list(ID_COLUMNS)
    for m in metrics:
        columns += [m, f"{m} std", f"{m} n"] + ([f"{m} reported", f"{m} delta"] if m in matched else [])
    columns += ["note", "reference"]
    rows = []
    for table in tables:
        for r in table.rows:
            row = {"dataset": table.dataset, "protocol": table.protocol, "variant": r.variant,
                   "query_domain": r.query_domain, "gallery": r.gallery, "method": r.method, "source": r.kind,
                   "implemented": r.implemented, "backbone": r.backbone, "budget": r.budget,
                   "selection": r.selection, "note": "; ".join(r.notes), "reference": "; ".join(r.references)}
            for m, stat in r.values.items():
                row.update({m: stat.mean, f"{m} std": stat.std, f"{m} n": stat.n})
            for m, value in r.reported.items():
                row.update({f"{m} reported": value, f"{m} delta": r.delta(m)})
            rows.append(row)
    df = pd.DataFrame(rows, columns=columns)
    for m in metrics:
        df[f"{m} n"] = pd.array(df[f"{m} n"], dtype="Int64")
        for col in (m, f"{m} std", *([f"{m} reported", f"{m} delta"] if m in matched else [])):
            df[col] = pd.to_numeric(df[col])
    return df


def wide_csv(tables: list[Table]) -> str:
    return wide_table(tables).to_csv(index=False, lineterminator="\n", float_format="%.6f")
