"""`xbench regress DIR --against GOLDEN.csv`: fail when a metric drifts beyond tolerance or goes missing.

A golden file written by `--update` holds each metric's tolerance (one query's worth, granularity.py) and,
beside it in NAME.meta.json, the library versions of the run that made it; a later run with other versions
is told so, since numbers may then move within tolerance."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import XBenchError
from ..io_utils import atomic_write, atomic_write_json
from ..runner.records import read_records
from .granularity import one_query
from .long import long_rows

KEY = ["method", "dataset", "protocol", "variant", "query_domain", "gallery", "seed", "metric"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("regress", help="compare a run with a golden leaderboard",
                       description="Exit 1 and list every metric that moved beyond --tol or is missing. "
                                   "--update (re)writes the golden file from the run, deliberately.")
    p.add_argument("dir", help="run folder holding records/")
    p.add_argument("--against", required=True, help="golden long CSV, e.g. benchmarks/golden/smoke.csv")
    p.add_argument("--tol", type=float, help="one absolute tolerance for every metric (default: each metric's "
                   "own, one query's worth, from the golden file; 0.005 for golden files without it)")
    p.add_argument("--update", action="store_true", help="write the golden file from this run instead")
    p.add_argument("--width", type=int, help="console width (default: the terminal's; unlimited when piped); "
                                             "text is folded, never cut")
    p.set_defaults(func=regress_command)


DEFAULT_TOL = 0.005  # for golden files written before per-metric tolerances


def current_values(run_dir: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The run's metrics (KEY, value, tolerance: one query's worth) and its records."""
    records = read_records(run_dir)
    long = long_rows(records)
    counts = {_cell_of(r): r.get("counts") or {} for r in records if r.get("status") == "ok"}
    tolerance = [one_query(row["metric"], counts.get(_cell_of(row), {})) for _, row in long.iterrows()]
    return long[KEY + ["value"]].assign(tolerance=tolerance), records


def _cell_of(row: Any) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY[:-1])


def compare(current: pd.DataFrame, golden: pd.DataFrame, tol: float | None) -> pd.DataFrame:
    """Rows of golden whose metric is missing in `current` or differs by more than its tolerance (`tol` when
    given, else the golden row's own, else DEFAULT_TOL)."""
    merged = golden.merge(current.drop(columns="tolerance", errors="ignore"), on=KEY, how="left",
                          suffixes=("_golden", "_current"))
    merged["delta"] = merged["value_current"] - merged["value_golden"]
    if tol is not None or "tolerance" not in merged:
        merged["tolerance"] = DEFAULT_TOL if tol is None else tol
    bad = merged[merged["value_current"].isna() | (merged["delta"].abs() > merged["tolerance"] + 1e-9)]
    return bad.assign(problem=["missing" if pd.isna(v) else "drift" for v in bad["value_current"]])


def meta_path(golden: Path) -> Path:
    return golden.with_name(f"{golden.stem}.meta.json")


def run_versions(records: list[dict[str, Any]]) -> dict[str, str]:
    """The library versions the run's records carry (the first record that has them)."""
    return next((r["library_versions"] for r in records if r.get("library_versions")), {})


def version_note(golden: Path, records: list[dict[str, Any]]) -> str | None:
    """A line saying how this run's library versions differ from the golden run's, or None if they agree."""
    run = run_versions(records)
    path = meta_path(golden)
    if not path.is_file():
        return f"note: {golden} records no library versions (no {path.name}); numbers may move with them"
    made = json.loads(path.read_text(encoding="utf-8")).get("library_versions") or {}
    diff = [f"{k} {run.get(k)} (golden {made.get(k)})" for k in sorted(set(run) | set(made))
            if k != "xdomain_bench" and run.get(k) != made.get(k)]
    if not diff:
        return None
    return "note: library versions differ from the golden run's: " + ", ".join(diff)


def read_golden(path: Path) -> pd.DataFrame:
    """The golden long CSV, checked: the KEY columns and `value`, a number on every row, integer seeds."""
    fix = f"fix the file, or rewrite it deliberately with `xbench regress RUN --against {path} --update`"
    if not path.is_file():
        raise XBenchError(f"golden file not found: {path}; create it deliberately with `xbench regress RUN "
                          f"--against {path} --update`")
    try:
        rows = [(n, r) for n, r in enumerate(csv.reader(path.read_text(encoding="utf-8").splitlines()), 1) if r]
    except UnicodeDecodeError:
        raise XBenchError(f"golden file {path} is not UTF-8 text; {fix}") from None
    except csv.Error as exc:
        raise XBenchError(f"golden file {path} is not a well-formed CSV ({exc}); {fix}") from None
    if not rows:
        raise XBenchError(f"golden file {path} is empty; {fix}")
    header = rows[0][1]
    for n, row in rows[1:]:
        if len(row) != len(header):
            raise XBenchError(f"golden file {path} line {n} has {len(row)} fields, the header {len(header)}; {fix}")
    df = pd.DataFrame([r for _, r in rows[1:]], columns=header, dtype=str)
    missing = [c for c in KEY + ["value"] if c not in df.columns]
    if missing:
        raise XBenchError(f"golden file {path} lacks columns {missing}")
    if df.empty:
        raise XBenchError(f"golden file {path} has a header but no rows; {fix}")
    values = pd.to_numeric(df["value"], errors="coerce")
    checks = [("value", values.notna()), ("seed", df["seed"].str.fullmatch(r"\d+"))]
    if "tolerance" in df:
        checks.append(("tolerance", pd.to_numeric(df["tolerance"], errors="coerce") >= 0))
    for column, ok in checks:
        if not ok.all():
            i = int((~ok).to_numpy().argmax())
            what = {"value": "a number", "seed": "an integer"}.get(column, "a number >= 0")
            raise XBenchError(f"golden file {path} line {rows[i + 1][0]}: {column} {df[column].iloc[i]!r} "
                              f"({df['method'].iloc[i]} {df['metric'].iloc[i]}) is not {what}; {fix}")
    if "tolerance" in df:
        df = df.assign(tolerance=pd.to_numeric(df["tolerance"]))
    return df.assign(value=values.astype(float), seed=df["seed"].astype(int))


def regress_command(args: argparse.Namespace) -> int:
    from .console import make_console, print_table

    run_dir, golden_path = Path(args.dir), Path(args.against)
    golden = None if args.update else read_golden(golden_path)  # a broken golden file fails before the run is read
    if args.tol is not None and not args.tol >= 0:
        raise XBenchError(f"--tol must be a number >= 0, got {args.tol}")
    current, records = current_values(run_dir)
    if golden is None:
        text = current.to_csv(index=False, lineterminator="\n", float_format="%.6f")
        versions = run_versions(records)
        atomic_write(golden_path, lambda p: p.write_text(text, encoding="utf-8"))
        atomic_write_json(meta_path(golden_path), {"library_versions": versions,
                                                   "tolerance": "one query's worth per metric (granularity.py)"})
        print(f"wrote golden file {golden_path} ({len(current)} metrics) and {meta_path(golden_path).name}")
        return 0
    current = current.astype({"seed": int})
    bad = compare(current, golden, args.tol)
    console = make_console(getattr(args, "width", None))
    note = version_note(golden_path, records)
    if note:
        console.print(note)
    rule = f"±{args.tol}" if args.tol is not None else (
        "their tolerances (one query's worth)" if "tolerance" in golden else f"±{DEFAULT_TOL}")
    if bad.empty:
        console.print(f"regress: {len(golden)} metrics within {rule} of {golden_path}")
        return 0
    rows = []
    for _, r in bad.iterrows():
        cur = "" if pd.isna(r["value_current"]) else f"{r['value_current']:.4f}"
        delta = "" if pd.isna(r["delta"]) else f"{r['delta']:+.4f}"
        rows.append([r["method"], r["dataset"], r["protocol"], str(r["query_domain"]), str(r["gallery"]),
                     str(r["seed"]), r["metric"], f"{r['value_golden']:.4f}", cur, delta,
                     f"{r['tolerance']:.4f}", r["problem"]])
    print_table(console, f"{len(bad)} of {len(golden)} metrics outside {rule} of {golden_path}",
                ["method", "dataset", "protocol", "query_domain", "gallery", "seed", "metric", "golden", "current",
                 "delta", "tol", "problem"], rows, n_label=3)
    return 1
