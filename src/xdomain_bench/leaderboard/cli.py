"""`xbench leaderboard DIR`: records -> leaderboard.csv (long), leaderboard_wide.csv, leaderboard.md."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..io_utils import atomic_write
from ..paths import project_root
from ..runner.records import read_records
from .long import LONG_COLUMNS, long_rows
from .status import read_expected, status_entries
from .wide import add_domain_averages, read_reported, wide_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="aggregate records into leaderboard CSVs",
                       description="Read DIR/records/*.json; write DIR/leaderboard.csv (long), "
                                   "DIR/leaderboard_wide.csv (mean ± std (n) over seeds, reported numbers beside "
                                   "ours) and DIR/leaderboard.md.")
    p.add_argument("dir", help="a run folder holding records/")
    p.add_argument("--reported", help="reported numbers CSV (default: benchmarks/reported.csv)")
    p.add_argument("--no-reported", action="store_true", help="do not join reported numbers")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    p.set_defaults(func=leaderboard_command)


def _primary_metrics(records: list[dict]) -> dict[tuple[str, str], str]:
    from ..data.base import get_dataset

    out = {}
    for rec in records:
        key = (rec["dataset"], rec["protocol"])
        if key not in out:
            try:
                out[key] = get_dataset(rec["dataset"]).protocol_info(rec["protocol"]).primary_metric
            except Exception:  # an unknown protocol in an old record must not break the table
                out[key] = "primary"
    return out


def build_tables(out: Path, reported_path: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    records = read_records(out)
    long = add_domain_averages(long_rows(records))
    reported = read_reported(reported_path) if reported_path else None
    if reported is not None:  # only the benchmarks this run covers
        present = set(zip(long["dataset"], long["protocol"]))
        reported = reported[[(d, p) in present for d, p in zip(reported["dataset"], reported["protocol"])]]
    full = long
    if reported is not None:
        rep = reported.assign(variant="paper", seed="", source="reported")[LONG_COLUMNS]
        full = pd.concat([long, rep], ignore_index=True)
    status = status_entries(records, read_expected(out), long, _primary_metrics(records))
    return full, wide_table(long, status, reported), len(records)


def leaderboard_command(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    reported_path = None
    if not getattr(args, "no_reported", False):
        reported_path = Path(args.reported) if getattr(args, "reported", None) else project_root() / "benchmarks" / "reported.csv"
    long, wide, n_records = build_tables(out, reported_path)
    long_text = long.to_csv(index=False, lineterminator="\n", float_format="%.6f")
    wide_text = wide.to_csv(index=False, lineterminator="\n")
    atomic_write(out / "leaderboard.csv", lambda p: p.write_text(long_text, encoding="utf-8"))
    atomic_write(out / "leaderboard_wide.csv", lambda p: p.write_text(wide_text, encoding="utf-8"))
    atomic_write(out / "leaderboard.md", lambda p: p.write_text(markdown(wide), encoding="utf-8"))
    if not args.quiet:
        print_wide(wide)
    print(f"wrote {out}/leaderboard.csv, leaderboard_wide.csv, leaderboard.md ({len(long)} long rows from "
          f"{n_records} records)")
    return 0


def markdown(wide: pd.DataFrame) -> str:
    cols = list(wide.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in wide.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def print_wide(wide: pd.DataFrame) -> None:
    """One rich table per dataset/protocol, our columns only (reported and delta beside them)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    groups: dict[str, list[str]] = {}
    for col in wide.columns[1:]:
        groups.setdefault("/".join(col.split("/")[:3]), []).append(col)
    for group, cols in sorted(groups.items()):
        table = Table(title=group, show_lines=False)
        table.add_column("method")
        for c in cols:
            table.add_column("/".join(c.split("/")[3:]), justify="right")
        for _, row in wide.iterrows():
            values = [str(row[c]) for c in cols]
            if any(values):
                table.add_row(str(row["method"]), *values)
        console.print(table)
