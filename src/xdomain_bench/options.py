"""Command-line option helpers shared by the sub-commands: `--set` overrides and deprecated spellings.

One override syntax for every command: `--set method.KEY=VALUE` (method card options) and `--set data.KEY=VALUE`
(DataModule / protocol options). Keys are dotted for nesting; values are YAML (numbers, booleans, lists, maps).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from .errors import ConfigError

SET_TARGETS = ("method", "data")


def deprecated(what: str, instead: str) -> None:
    """One note on stderr: the old spelling still works."""
    print(f"xbench: note: {what} is deprecated; use {instead}", file=sys.stderr)


def parse_pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """`key=value` pairs; values parsed as YAML; dotted keys nest: `optimizer.lr=1e-3` -> {"optimizer": {"lr": 1e-3}}."""
    from .methods.config import deep_merge, dotted

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad {what} '{item}'; write key=value, e.g. method.optimizer.lr=1e-3")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise ConfigError(f"bad {what} '{item}': the value is not valid YAML; quote it, e.g. "
                              f"{key}='\"text\"'") from None
        out = deep_merge(out, dotted(key, parsed))
    return out


def split_set(items: list[str] | None, bare: str = "method") -> dict[str, list[str]]:
    """`--set` items by target: {"method": [...], "data": [...]}, prefixes removed. An item without a
    `method.`/`data.` prefix goes to `bare` (the command's older meaning of --set), with a deprecation note."""
    out: dict[str, list[str]] = {t: [] for t in SET_TARGETS}
    for item in items or []:
        target, dot, rest = item.partition(".")
        if dot and target in SET_TARGETS and "=" in rest and "=" not in target:
            out[target].append(rest)
        else:
            deprecated(f"--set {item} (no method./data. prefix)", f"--set {bare}.{item}")
            out[bare].append(item)
    return out


class DeprecatedAlias(argparse.Action):
    """An old flag spelling: stores like the new one and prints a deprecation note."""

    def __init__(self, option_strings, dest, instead: str = "", **kwargs) -> None:
        self.instead = instead
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        deprecated(option_string or self.dest, self.instead)
        if self.nargs == 0:
            setattr(namespace, self.dest, True)
        elif isinstance(getattr(namespace, self.dest, None), list):
            getattr(namespace, self.dest).append(values)
        else:
            setattr(namespace, self.dest, values)


def add_deprecated(parser: argparse.ArgumentParser, flags: list[str], dest: str, instead: str, **kwargs) -> None:
    """Register an old spelling `flags` that fills `dest`, with a deprecation note when used."""
    parser.add_argument(*flags, dest=dest, action=DeprecatedAlias, instead=instead, help=f"deprecated: use {instead}",
                        **kwargs)
