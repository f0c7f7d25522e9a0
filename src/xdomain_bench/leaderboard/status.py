"""Cells that have no metrics: n/a (a method cannot run a protocol), failed, or missing (no record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .identity import BackboneNames, budget_label

EXPECTED_CELLS = "expected_cells.json"


def read_expected(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / EXPECTED_CELLS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def status_entries(records: list[dict[str, Any]], expected: list[dict[str, Any]],
                   names: BackboneNames) -> list[dict[str, Any]]:
    """One entry per non-ok record or missing cell, with what places it in a table: dataset, protocol, variant,
    holdout, gallery, method, backbone label and budget."""
    seen_keys = {r["cell_key"] for r in records}
    entries = []
    for rec in records:
        if rec.get("status") == "ok":
            continue
        reason = rec.get("error") or rec.get("reason") or "unknown"
        status = rec.get("status") if rec.get("status") in ("n/a", "interrupted") else "failed"
        text = f"n/a ({reason})" if status == "n/a" else f"{status} ({reason.splitlines()[0][:120]})"
        entries.append(_entry(rec["cell"], text, names.of_record(rec), budget_label(rec["cell"], rec)))
    for cell in expected:
        if cell["key"] not in seen_keys:
            entries.append(_entry(cell["cell"], "missing", names.label(cell["cell"].get("backbone")),
                                  budget_label(cell["cell"])))
    return entries


def _entry(cell: dict[str, Any], text: str, backbone: str, budget: str) -> dict[str, Any]:
    return {"method": cell["method"], "dataset": cell["dataset"], "protocol": cell["protocol"],
            "variant": cell.get("variant") or "clean", "holdout": cell.get("holdout"),
            "gallery": (cell.get("data_options") or {}).get("gallery"), "backbone": backbone, "budget": budget,
            "text": text}
