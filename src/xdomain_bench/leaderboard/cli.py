"""`xbench leaderboard DIR`: records -> leaderboard.csv (long), leaderboard_wide.csv, leaderboard.md,
leaderboard.tex and leaderboard.json, and the per-protocol tables on the console."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.text import Text

from ..errors import ConfigError
from ..io_utils import atomic_write_text
from ..paths import reported_csv
from ..runner.records import read_records
from .console import make_console, print_tables
from .identity import BackboneNames
from .long import LONG_COLUMNS, SORT, add_domain_averages, long_rows
from .render import as_json, latex, markdown
from .reported import implemented_methods, normalise_reported, read_reported, reported_long
from .status import read_expected, status_entries
from .tables import Table, build_tables
from .wide import wide_csv

FILES = {"csv": ("leaderboard.csv", "leaderboard_wide.csv"), "md": ("leaderboard.md",),
         "latex": ("leaderboard.tex",), "json": ("leaderboard.json",)}
MIN_WIDTH = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="aggregate records into leaderboards (CSV, markdown, LaTeX, JSON)",
                       description="Read DIR/records/*.json and write DIR/leaderboard.csv (long: one row per cell "
                                   "and metric, the source of truth), leaderboard_wide.csv (mean, std and n per "
                                   "metric), leaderboard.md and leaderboard.tex (one table per dataset/protocol) "
                                   "and leaderboard.json; print the tables.")
    p.add_argument("dir", help="a run folder holding records/")
    p.add_argument("--format", help="write only these: a comma list of csv, md, latex, json (default: all)")
    p.add_argument("--reported", help="reported numbers CSV (default: the built-in one, benchmarks/reported.csv in a checkout)")
    p.add_argument("--no-reported", action="store_true", help="do not join reported numbers")
    p.add_argument("--width", type=int, help="console width in characters (default: the terminal's; unlimited "
                                             "when piped); wider tables are split, never cut")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    p.set_defaults(func=leaderboard_command)


@dataclass
class Leaderboard:
    long: pd.DataFrame  # ours (with domain averages), then reported
    tables: list[Table]
    n_records: int


def build_leaderboard(out: Path, reported_path: Path | None) -> Leaderboard:
    records = read_records(out)
    if not records:
        raise ConfigError(f"no records in {out / 'records'}: nothing to put on a leaderboard; run cells into it first "
                          f"(xbench run ... --out {out})")
    names = BackboneNames.from_records(records)
    long = add_domain_averages(long_rows(records, names))
    long = long.sort_values(SORT, kind="stable").reset_index(drop=True)
    status = status_entries(records, read_expected(out), names)
    reported = None
    if reported_path is not None:  # only the benchmarks this run covers
        covered = set(zip(long["dataset"], long["protocol"])) | {(s["dataset"], s["protocol"]) for s in status}
        raw = read_reported(reported_path)
        raw = raw[[(d, p) in covered for d, p in zip(raw["dataset"], raw["protocol"])]]
        reported = normalise_reported(raw, implemented_methods())
        long = pd.concat([long, reported_long(reported, LONG_COLUMNS)], ignore_index=True)
    return Leaderboard(long, build_tables(long, reported, status), len(records))


def parse_formats(text: str | None) -> list[str]:
    if not text:
        return list(FILES)
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FILES]
    if unknown or not formats:
        raise ConfigError(f"unknown --format {','.join(unknown) or repr(text)}; choose from {', '.join(FILES)} "
                          "(comma-separated, e.g. --format csv,latex)")
    return list(dict.fromkeys(formats))


def render_files(board: Leaderboard, formats: list[str], out: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    intro = (f"Made by `xbench leaderboard` from {board.n_records} records in `{out}`. One table per "
             "dataset/protocol; the long CSV (`leaderboard.csv`) holds every value.")
    if "csv" in formats:
        texts["leaderboard.csv"] = board.long.to_csv(index=False, lineterminator="\n", float_format="%.6f")
        texts["leaderboard_wide.csv"] = wide_csv(board.tables)
    if "md" in formats:
        texts["leaderboard.md"] = markdown(board.tables, intro)
    if "latex" in formats:
        texts["leaderboard.tex"] = latex(board.tables)
    if "json" in formats:
        texts["leaderboard.json"] = as_json(board.tables, {"generated_by": "xbench leaderboard",
                                                           "records": board.n_records})
    return texts


def leaderboard_command(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    formats = parse_formats(getattr(args, "format", None))
    width = getattr(args, "width", None)
    if width is not None and width < MIN_WIDTH:
        raise ConfigError(f"--width {width} is too narrow; give at least {MIN_WIDTH} characters")
    reported_path = None
    if not getattr(args, "no_reported", False):
        given = getattr(args, "reported", None)
        reported_path = Path(given) if given else reported_csv()
    board = build_leaderboard(out, reported_path)
    texts = render_files(board, formats, out)  # everything rendered before anything is written
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    console = make_console(width)
    if not getattr(args, "quiet", False):
        print_tables(board.tables, console)
    console.print(Text(f"wrote {', '.join(str(out / n) for n in texts)} ({len(board.long)} long rows from "
                       f"{board.n_records} records)"), overflow="fold")
    return 0
