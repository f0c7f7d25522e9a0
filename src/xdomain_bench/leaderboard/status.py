"""Cells that have no metrics: n/a (a method cannot run a protocol), failed, or missing (no record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

EXPECTED_CELLS = "expected_cells.json"


def read_expected(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / EXPECTED_CELLS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def status_entries(records: list[dict[str, Any]], expected: list[dict[str, Any]], long: pd.DataFrame,
                   primary: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """One entry per non-ok or missing cell, placed in the primary-metric column of its setting."""
    seen_keys = {r["cell_key"] for r in records}
    entries = []
    for rec in records:
        if rec.get("status") == "ok":
            continue
        reason = rec.get("error") or rec.get("reason") or "unknown"
        text = f"n/a ({reason})" if rec.get("status") == "n/a" else f"failed ({reason.splitlines()[0][:120]})"
        entries.append(_entry(rec["cell"], text, long, primary))
    for cell in expected:
        if cell["key"] not in seen_keys:
            entries.append(_entry(cell["cell"], "missing", long, primary))
    return entries


def _entry(cell: dict[str, Any], text: str, long: pd.DataFrame, primary: dict[tuple[str, str], str]) -> dict[str, Any]:
    metric = primary.get((cell["dataset"], cell["protocol"]), "primary")
    gallery = (cell.get("data_options") or {}).get("gallery")
    same = long[(long["dataset"] == cell["dataset"]) & (long["protocol"] == cell["protocol"])
                & (long["variant"] == cell["variant"]) & (long["metric"] == metric)]
    if cell.get("holdout"):
        same = same[same["query_domain"] == cell["holdout"]]
    if gallery:
        same = same[same["gallery"] == gallery]
    if len(same):
        row = same.iloc[0]
        query_domain, gallery = row["query_domain"], row["gallery"]
    else:
        query_domain, gallery = cell.get("holdout") or "-", gallery or "-"
    column = "/".join([cell["dataset"], cell["protocol"], cell["variant"], str(query_domain), str(gallery), metric])
    return {"method": cell["method"], "column": column, "text": text}
