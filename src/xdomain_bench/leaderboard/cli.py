"""`xbench leaderboard DIR`: records -> DIR/leaderboard.csv and a rich table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io_utils import atomic_write
from ..runner.records import read_records
from .long import long_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="aggregate records into leaderboard CSVs",
                       description="Read DIR/records/*.json and write DIR/leaderboard.csv (long format).")
    p.add_argument("dir", help="a run folder holding records/")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    p.set_defaults(func=leaderboard_command)


def leaderboard_command(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    records = read_records(out)
    long = long_rows(records)
    text = long.to_csv(index=False, lineterminator="\n", float_format="%.6f")
    atomic_write(out / "leaderboard.csv", lambda p: p.write_text(text, encoding="utf-8"))
    if not args.quiet:
        print_long(long)
    print(f"wrote {out / 'leaderboard.csv'} ({len(long)} rows from {len(records)} records)")
    return 0


def print_long(long) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="leaderboard (long)")
    cols = ["method", "dataset", "protocol", "variant", "query_domain", "gallery", "seed", "metric", "value"]
    for c in cols:
        table.add_column(c, justify="right" if c == "value" else "left")
    for _, row in long.iterrows():
        table.add_row(*[f"{row[c]:.4f}" if c == "value" else str(row[c]) for c in cols])
    Console().print(table)
