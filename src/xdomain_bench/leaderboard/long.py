"""Records -> the long leaderboard: one row per (cell, metric), numeric values only, the source of truth."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import XBenchError
from ..runner.records import row_identity
from .identity import BackboneNames, budget_label, record_backbone, selection_tag, settings_fingerprint
from .metrics import protocol_metrics

LONG_COLUMNS = ["method", "dataset", "protocol", "variant", "query_domain", "gallery", "seed", "metric", "value",
                "backbone", "budget", "selection", "source", "backbone_sha256", "reference", "embedding_side"]
# What a row of the wide and per-protocol tables is (the long table adds the seed and the metric).
ROW_KEYS = ["dataset", "protocol", "variant", "query_domain", "gallery", "method", "backbone", "budget", "selection"]
SORT = ["dataset", "protocol", "variant", "query_domain", "gallery", "method", "backbone", "budget", "selection",
        "seed", "metric"]


def long_rows(records: list[dict[str, Any]], names: BackboneNames | None = None) -> pd.DataFrame:
    """Rows for every metric of every `ok` record, in a stable order.

    Two records for one row (same identity, `records.row_identity`, seed included) are an error: with other
    settings (another override or method variant) averaging them would mix two configurations; with the same
    settings (the backbone spelled two ways) one seed would count twice."""
    names = names or BackboneNames.from_records(records)
    rows, seen = [], {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        label = names.of_record(rec)
        key = row_identity(rec["cell"], rec, backbone=label)
        first = seen.setdefault(key, rec)
        if first is not rec:
            raise _conflict(key, first, rec)
        base = {"method": rec["method"], "dataset": rec["dataset"], "protocol": rec["protocol"],
                "variant": rec["variant"], "query_domain": rec.get("query_domain", ""), "gallery": rec.get("gallery", ""),
                "seed": rec["seed"], "backbone": label, "budget": budget_label(rec["cell"], rec),
                "selection": selection_tag(rec), "source": "ours", "backbone_sha256": record_backbone(rec)[1] or "",
                "reference": "", "embedding_side": rec.get("embedding_side", "")}
        for metric, value in sorted(rec.get("metrics", {}).items()):
            rows.append({**base, "metric": metric, "value": float(value)})
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return df.sort_values(SORT, kind="stable").reset_index(drop=True)


def _conflict(key: tuple, first: dict[str, Any], rec: dict[str, Any]) -> XBenchError:
    *row, seed = key
    name = " · ".join(str(k) for k in row if k not in (None, ""))
    if settings_fingerprint(first["cell"]) != settings_fingerprint(rec["cell"]):
        what = "with different settings"
    else:
        what = "twice (the same settings, the backbone named two ways)"
    return XBenchError(
        f"two records give the leaderboard row {name} (seed {seed}) {what}:\n  {first.get('cell_key')}\n  "
        f"{rec.get('cell_key')}\nOne configuration per row: move the older record (OUT/records/*.json) aside, or "
        "write the other run to another --out.")


def add_domain_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the mean over held-out query domains where a protocol has several (DomainNet's settings).

    The average is labelled `average` when it covers every held-out domain of the protocol (as the papers'
    averages do), else `average(k of N)`, so that it never passes for the full average."""
    keys = ["method", "dataset", "protocol", "variant", "gallery", "seed", "metric", "backbone", "budget", "selection"]
    ours = long[long["source"] == "ours"]
    parts = []
    for key, grp in ours.groupby(keys, dropna=False, sort=True):
        domains = set(grp["query_domain"])
        if len(domains) < 2:
            continue
        row = dict(zip(keys, key))
        info = protocol_metrics(row["dataset"], row["protocol"])
        full = set(info.holdouts) if info else set()
        label = "average" if domains == full else (f"average({len(domains)} of {len(full)})" if full
                                                     else f"average({len(domains)})")
        sha = sorted(set(grp["backbone_sha256"]))
        sides = sorted(set(grp["embedding_side"]))
        row.update(query_domain=label, value=float(grp["value"].mean()), source="ours",
                   backbone_sha256=sha[0] if len(sha) == 1 else "", reference="",
                   embedding_side=sides[0] if len(sides) == 1 else "")
        parts.append(row)
    if not parts:
        return long
    return pd.concat([long, pd.DataFrame(parts, columns=LONG_COLUMNS)], ignore_index=True)
