"""`xbench regress DIR --against GOLDEN.csv`: fail when a metric drifts beyond tolerance or goes missing."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pandas as pd

from ..errors import XBenchError
from ..io_utils import atomic_write
from ..runner.records import read_records
from .long import long_rows

KEY = ["method", "dataset", "protocol", "variant", "query_domain", "gallery", "seed", "metric"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("regress", help="compare a run with a golden leaderboard",
                       description="Exit 1 and list every metric that moved beyond --tol or is missing. "
                                   "--update (re)writes the golden file from the run, deliberately.")
    p.add_argument("dir", help="run folder holding records/")
    p.add_argument("--against", required=True, help="golden long CSV, e.g. benchmarks/golden/smoke.csv")
    p.add_argument("--tol", type=float, default=0.005, help="absolute tolerance (default 0.005)")
    p.add_argument("--update", action="store_true", help="write the golden file from this run instead")
    p.add_argument("--width", type=int, help="console width (default: the terminal's; unlimited when piped); "
                                             "text is folded, never cut")
    p.set_defaults(func=regress_command)


def current_values(run_dir: Path) -> pd.DataFrame:
    long = long_rows(read_records(run_dir))
    return long[KEY + ["value"]]


def compare(current: pd.DataFrame, golden: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Rows of golden whose metric is missing in `current` or differs by more than `tol`."""
    merged = golden.merge(current, on=KEY, how="left", suffixes=("_golden", "_current"))
    merged["delta"] = merged["value_current"] - merged["value_golden"]
    bad = merged[merged["value_current"].isna() | (merged["delta"].abs() > tol)]
    return bad.assign(problem=["missing" if pd.isna(v) else "drift" for v in bad["value_current"]])


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
    for column, ok in (("value", values.notna()), ("seed", df["seed"].str.fullmatch(r"\d+"))):
        if not ok.all():
            i = int((~ok).to_numpy().argmax())
            what = "a number" if column == "value" else "an integer"
            raise XBenchError(f"golden file {path} line {rows[i + 1][0]}: {column} {df[column].iloc[i]!r} "
                              f"({df['method'].iloc[i]} {df['metric'].iloc[i]}) is not {what}; {fix}")
    return df.assign(value=values.astype(float), seed=df["seed"].astype(int))


def regress_command(args: argparse.Namespace) -> int:
    from .console import make_console, print_table

    run_dir, golden_path = Path(args.dir), Path(args.against)
    golden = None if args.update else read_golden(golden_path)  # a broken golden file fails before the run is read
    current = current_values(run_dir)
    if golden is None:
        text = current.to_csv(index=False, lineterminator="\n", float_format="%.6f")
        atomic_write(golden_path, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"wrote golden file {golden_path} ({len(current)} metrics)")
        return 0
    current = current.astype({"seed": int})
    bad = compare(current, golden, args.tol)
    console = make_console(getattr(args, "width", None))
    if bad.empty:
        console.print(f"regress: {len(golden)} metrics within ±{args.tol} of {golden_path}")
        return 0
    rows = []
    for _, r in bad.iterrows():
        cur = "" if pd.isna(r["value_current"]) else f"{r['value_current']:.4f}"
        delta = "" if pd.isna(r["delta"]) else f"{r['delta']:+.4f}"
        rows.append([r["method"], r["dataset"], r["protocol"], str(r["query_domain"]), str(r["gallery"]),
                     str(r["seed"]), r["metric"], f"{r['value_golden']:.4f}", cur, delta, r["problem"]])
    print_table(console, f"{len(bad)} of {len(golden)} metrics outside ±{args.tol} of {golden_path}",
                ["method", "dataset", "protocol", "query_domain", "gallery", "seed", "metric", "golden", "current",
                 "delta", "problem"], rows, n_label=3)
    return 1
