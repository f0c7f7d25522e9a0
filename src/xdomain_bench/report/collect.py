"""What the report reads from a run folder: the ok records grouped by setting, their per-query results
(runner/per_query.py) and the CSV training logs each record names (`OUT/logs/<cell slug>/<phase>/version_<n>/
metrics.csv`, runner/loggers.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import XBenchError
from ..leaderboard.identity import budget_label
from ..runner.per_query import read_per_query
from ..runner.records import read_records

ZERO_SHOT = "zero_shot"


@dataclass
class Run:
    """One ok record of a run folder."""

    record: dict[str, Any]

    @property
    def method(self) -> str:
        return self.record["method"]

    @property
    def seed(self) -> int:
        return int(self.record.get("seed") or 0)

    @property
    def setting(self) -> tuple[str, ...]:
        """What must be equal for two records to retrieve the same queries from the same gallery."""
        rec = self.record
        gallery = (rec["cell"].get("data_options") or {}).get("gallery") or rec.get("gallery") or "-"
        return (rec["dataset"], rec["protocol"], rec.get("variant") or "clean", rec.get("holdout") or "-",
                str(gallery))

    @property
    def backbone(self) -> str:
        return str(self.record["cell"].get("backbone"))

    @property
    def budget(self) -> str:
        return budget_label(self.record["cell"], self.record)


def _labels(runs: list[Run]) -> dict[int, str]:
    """A series name per run of one setting: the method, plus backbone and budget where the setting holds
    several (budgets of trained methods only: zero-shot trains nothing)."""
    backbones = {r.backbone for r in runs}
    budgets = {r.budget for r in runs if r.method != ZERO_SHOT}
    out = {}
    for r in runs:
        bits = [r.method] + ([r.backbone] if len(backbones) > 1 else [])
        if len(budgets) > 1 and r.method != ZERO_SHOT:
            bits.append(r.budget)
        out[id(r)] = " · ".join(bits)
    return out


def setting_title(setting: tuple[str, ...]) -> str:
    dataset, protocol, variant, holdout, gallery = setting
    where = "".join(f" · {k} {v}" for k, v in (("holdout", holdout), ("gallery", gallery)) if v != "-")
    return f"{dataset} / {protocol} · {variant}{where}"


@dataclass
class RunFolder:
    out: Path
    runs: list[Run]
    n_records: int
    statuses: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def by_setting(self) -> dict[tuple[str, ...], dict[str, list[Run]]]:
        """setting -> series (method, with backbone/budget where needed) -> runs by ascending seed."""
        settings: dict[tuple, list[Run]] = defaultdict(list)
        for run in self.runs:
            settings[run.setting].append(run)
        out = {}
        for setting, runs in sorted(settings.items()):
            names = _labels(runs)
            series: dict[str, list[Run]] = defaultdict(list)
            for run in sorted(runs, key=lambda r: (names[id(r)], r.seed)):
                series[names[id(run)]].append(run)
            out[setting] = dict(series)
        return out

    def per_query(self, run: Run) -> dict[str, Any] | None:
        """The run's per-query arrays, or None (not saved, image-text, or unreadable: noted once)."""
        entry = run.record.get("per_query")
        if not entry:
            return None
        try:
            return read_per_query(self.out / "records", entry)
        except XBenchError as exc:
            self.notes.append(str(exc))
            return None

    def training_logs(self, run: Run) -> list[tuple[str, pd.DataFrame]]:
        """(phase, metrics.csv rows) for each CSV log the record names (`logs`, runner/loggers.py)."""
        entry = run.record.get("logs") or {}
        if entry.get("kind") != "csv":
            return []
        out = []
        for rel in entry.get("files", []):
            path = self.out / entry["dir"] / rel  # <phase>/version_<n>/metrics.csv
            try:
                frame = pd.read_csv(path)
            except (OSError, ValueError, pd.errors.ParserError) as exc:
                self.notes.append(f"training log {path} unreadable: {exc}")
                continue
            if "step" in frame.columns and len(frame):
                out.append((Path(rel).parts[0], frame))
        return out


def collect(out: str | Path) -> RunFolder:
    """The ok records under OUT/records (XBenchError when there are none to report)."""
    out = Path(out)
    records = read_records(out)
    statuses: dict[str, int] = defaultdict(int)
    for rec in records:
        statuses[str(rec.get("status"))] += 1
    runs = [Run(r) for r in records if r.get("status") == "ok"]
    if not runs:
        raise XBenchError(f"no ok records under {out / 'records'} ({dict(statuses) or 'none at all'}); "
                          f"run cells into it first (xbench run ... --out {out})")
    return RunFolder(out, runs, len(records), dict(statuses))
