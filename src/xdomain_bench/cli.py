"""`xbench`: the suite's command line. Every XBenchError becomes one clear line, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

from .errors import XBenchError
from .paths import CARDS_ENV


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        return version("xdomain_bench")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return __version__

# Modules that contribute sub-commands through `add_parser(subparsers)`.
COMMAND_MODULES = (
    "xdomain_bench.runner.cli",
    "xdomain_bench.runner.demo",
    "xdomain_bench.leaderboard.cli",
    "xdomain_bench.leaderboard.regress",
    "xdomain_bench.report.cli",
    "xdomain_bench.eval.cli",
    "xdomain_bench.data.cli",
    "xdomain_bench.vlm.cli",
    "xdomain_bench.discovery",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xbench", description="Benchmark suite for retrieval with frozen VLMs.")
    parser.add_argument("--version", action="version", version=f"xbench {package_version()}",
                        help="print the installed version and exit")
    parser.add_argument("--cards", action="append", metavar="DIR",
                        help="an external cards folder (methods/, datasets/, datasets/splits/, suites/), searched "
                        f"before the built-in cards; repeatable; also {CARDS_ENV} (os.pathsep-separated)")
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
    if args.cards:  # through the environment, so worker processes (suites, DDP ranks) search them too
        os.environ[CARDS_ENV] = os.pathsep.join([*args.cards, *filter(None, [os.environ.get(CARDS_ENV)])])
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
