"""`xbench`: the suite's command line. Every XBenchError becomes one clear line, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from .errors import XBenchError

# Modules that contribute sub-commands through `add_parser(subparsers)`.
COMMAND_MODULES = (
    "xdomain_bench.runner.cli",
    "xdomain_bench.runner.demo",
    "xdomain_bench.leaderboard.cli",
    "xdomain_bench.leaderboard.regress",
    "xdomain_bench.eval.cli",
    "xdomain_bench.data.cli",
    "xdomain_bench.vlm.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xbench", description="Benchmark suite for retrieval with frozen VLMs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    try:
        rc = args.func(args)
    except XBenchError as exc:
        print(f"xbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # the runner says which cell (and phase and step) it stopped in
        what = str(exc) or f"xbench {args.command}"
        print(f"xbench: interrupted {what}; resume with: {shlex.join(['xbench', *words])}", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
