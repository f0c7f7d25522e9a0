"""`xbench data synth|manifest|verify`: generic over the dataset registry."""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..options import add_deprecated, deprecated, split_set
from .base import get_dataset
from .manifest import write_manifest


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset trees: synthetic twins, frozen manifests, verification")
    cmds = data.add_subparsers(dest="data_command", metavar="ACTION")
    cmds.required = True

    p = cmds.add_parser("synth", help="write a synthetic tree in the dataset's official layout")
    p.add_argument("name", help="dataset name (xbench list datasets)")
    _data_root(p, "data root; the dataset folder is created under it")
    p.add_argument("--scale", default="tiny", choices=("tiny", "small"),
                   help="tiny (a few images per class, for tests) or small (the demo's); default tiny")
    p.add_argument("--seed", default=0, type=int, help="seed of the synthetic images (default 0)")
    p.set_defaults(func=cmd_synth)

    p = cmds.add_parser("manifest", help="build a frozen manifest CSV (+ .meta.json sidecar)")
    p.add_argument("name", help="dataset name (xbench list datasets)")
    _data_root(p, "data root holding the dataset folder")
    p.add_argument("--protocol", required=True, help="protocol id (xbench list protocols)")
    p.add_argument("--variant", default="clean", choices=("clean", "paper"),
                   help="clean (our leak-free splits, default) or paper (the papers' splits)")
    p.add_argument("--holdout", default=None, help="held-out query domain (dataset default if omitted)")
    p.add_argument("--gallery", default=None, help="gallery option, e.g. unseen | mixed")
    p.add_argument("--paper-profile", default=None, help="upstream profile for --variant paper")
    p.add_argument("--annotations", default=None, type=Path, help="annotation file, forwarded as annotations=")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="data.KEY=VALUE",
                   help="any further protocol option (repeatable), e.g. --set data.seen=quickdraw")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="deprecated: use --set data.KEY=VALUE")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    p.set_defaults(func=cmd_manifest)

    p = cmds.add_parser("verify", help="check a tree: counts, layout, unreadable images")
    p.add_argument("name", help="dataset name (xbench list datasets)")
    _data_root(p, "data root holding the dataset folder")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="report unreadable images but do not fail on them (the DataModule will skip them)")
    p.set_defaults(func=cmd_verify)


def _data_root(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--data-root", type=Path, help=f"{text} (required)")
    add_deprecated(p, ["--root"], "data_root", "--data-root", type=Path)


def _root(args: argparse.Namespace) -> Path:
    if args.data_root is None:
        raise ConfigError(f"xbench data {args.data_command} needs --data-root DIR")
    return args.data_root


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> dict; values parsed as YAML scalars (ints, bools), else kept as strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad --set data.{pair}; expected data.KEY=VALUE")
        out[key.replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def cmd_synth(args: argparse.Namespace) -> int:
    adapter = get_dataset(args.name)
    start = time.perf_counter()
    path = adapter.synth(_root(args), scale=args.scale, seed=args.seed)
    output_console().print(f"wrote synthetic {args.name} ({args.scale}, seed {args.seed}) to {path} "
                    f"in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    adapter = get_dataset(args.name)
    if args.option:
        deprecated("-o/--option KEY=VALUE", "--set data.KEY=VALUE")
    sets = split_set(args.sets, bare="data")
    if sets["method"]:
        raise ConfigError(f"xbench data manifest takes data options only, got --set method.{sets['method'][0]}")
    options = parse_options([*args.option, *sets["data"]])
    for key in ("gallery", "paper_profile", "annotations"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    manifest = adapter.build_manifest(_root(args), args.protocol, args.variant, args.holdout, **options)
    path = write_manifest(manifest, args.out)
    table = Table(title=f"{args.name} {args.protocol} ({args.variant})")
    table.add_column("role")
    table.add_column("rows", justify="right")
    for role, n in manifest.counts().items():
        table.add_row(role, str(n))
    console = output_console()
    console.print(table)
    console.print(f"wrote {path} and its sidecar; listing_sha256 {manifest.meta.get('listing_sha256')}",
                  markup=False, highlight=False)
    skipped = manifest.meta.get("skipped_files")
    n_skipped = len(skipped) if isinstance(skipped, list) else int(skipped or 0)
    if n_skipped:
        console.print(f"skipped {n_skipped} non-image or hidden files (listed in the sidecar)")
    for key, note in manifest.meta.get("notes", {}).items():
        console.print(f"[dim]{key}:[/dim] {note}")
    split_files = manifest.meta.get("split_files") or {}
    for line in split_files.get("malformed", []):
        console.print(f"warning: {line}", markup=False, highlight=False)
    return 0


def output_console() -> Console:
    """A console that never wraps a line: on a terminal long lines fold softly; piped or redirected
    output (rich assumes 80 columns there) gets every line whole."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=100_000)
    return console


def cmd_verify(args: argparse.Namespace) -> int:
    adapter = get_dataset(args.name)
    kwargs = {}
    if "skip_bad_images" in inspect.signature(adapter.verify).parameters:
        kwargs["skip_bad_images"] = args.skip_bad_images
    report = adapter.verify(_root(args), **kwargs)
    console = output_console()
    table = Table(title=f"{args.name} at {report.root}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key, value in report.counts.items():
        table.add_row(key, str(value))
    console.print(table)
    if report.warnings:
        console.print(f"[yellow]{len(report.warnings)} warning(s)[/yellow] (these do not fail verification):")
        for line in report.warnings:
            console.print(f"  - {line}", markup=False, highlight=False)
    if report.ok:
        console.print(f"[green]OK[/green]: {args.name} tree at {report.root} passed verification")
        return 0
    console.print(f"[red]{len(report.problems)} problem(s)[/red]:")
    for line in report.problems:
        console.print(f"  - {line}", markup=False, highlight=False)
    return 1
