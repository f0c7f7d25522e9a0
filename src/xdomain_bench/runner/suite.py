"""Suites: YAML matrices of methods × datasets × protocols × variants × seeds (× held-out domains, galleries)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .records import Cell

SUITE_KEYS = ("name", "description", "backbone", "seeds", "max_steps", "methods", "variants", "datasets", "overrides")
PROTOCOL_KEYS = ("holdouts", "galleries", "variants", "data")
OVERRIDE_KEYS = ("where", "max_steps", "method", "data", "skip", "method_variant")
WHERE_KEYS = ("method", "dataset", "protocol", "variant", "holdout", "gallery", "seed")


def _check_keys(obj: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {', '.join(valid)}")


def load_suite(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}; suites live in benchmarks/suites/*.yaml")
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed suite {path}: {exc}") from None
    if not isinstance(suite, dict):
        raise ConfigError(f"suite {path} must be a mapping with keys {', '.join(SUITE_KEYS)}")
    _check_keys(suite, SUITE_KEYS, str(path))
    for key in ("methods", "datasets"):
        if key not in suite:
            raise ConfigError(f"suite {path} needs '{key}'")
    for dname, dspec in (suite["datasets"] or {}).items():
        _check_keys(dspec or {}, ("protocols",), f"{path} datasets.{dname}")
        for pname, pspec in ((dspec or {}).get("protocols") or {}).items():
            _check_keys(pspec or {}, PROTOCOL_KEYS, f"{path} datasets.{dname}.protocols.{pname}")
    for i, ov in enumerate(suite.get("overrides") or []):
        _check_keys(ov, OVERRIDE_KEYS, f"{path} overrides[{i}]")
        _check_keys(ov.get("where") or {}, WHERE_KEYS, f"{path} overrides[{i}].where")
    suite["_path"] = str(path)
    return suite


def _matches(where: dict[str, Any], fields: dict[str, Any]) -> bool:
    for key, want in where.items():
        have = fields.get(key)
        wanted = want if isinstance(want, list) else [want]
        if have not in wanted:
            return False
    return True


def expand_suite(suite: dict[str, Any], *, backbone: str | None = None, seeds: list[int] | None = None,
                 max_steps: int | None = None, only: dict[str, list[str]] | None = None) -> list[Cell]:
    """All cells of a suite, in a stable order, with per-cell overrides applied."""
    from ..data.base import dataset_names
    from ..methods.base import method_names

    methods = suite["methods"]
    methods = method_names() if methods == "all" else list(methods)
    known_methods = method_names()
    for m in methods:
        if m not in known_methods:
            raise ConfigError(f"suite {suite['_path']}: unknown method '{m}'; known: {', '.join(known_methods)}")
    known_data = dataset_names()
    seeds = seeds if seeds is not None else list(suite.get("seeds") or [0])
    backbone = backbone or suite.get("backbone") or "tiny-clip"
    cells: list[Cell] = []
    for dname, dspec in suite["datasets"].items():
        if dname not in known_data:
            raise ConfigError(f"suite {suite['_path']}: unknown dataset '{dname}'; known: {', '.join(known_data)}")
        for pname, pspec in ((dspec or {}).get("protocols") or {}).items():
            pspec = pspec or {}
            variants = pspec.get("variants") or suite.get("variants") or ["clean"]
            for method in methods:
                for variant in variants:
                    for holdout in pspec.get("holdouts") or [None]:
                        for gallery in pspec.get("galleries") or [None]:
                            for seed in seeds:
                                cell = _make_cell(suite, method, dname, pname, variant, holdout, gallery, seed,
                                                  backbone, max_steps, pspec.get("data") or {})
                                if cell is not None:
                                    cells.append(cell)
    if only:
        _check_only(only, cells)
        cells = [c for c in cells if all(_field(c, k) in v for k, v in only.items())]
    return cells


def _field(cell: Cell, key: str) -> str:
    return str(getattr(cell, key, cell.data_options.get(key)))


def _check_only(only: dict[str, list[str]], cells: list[Cell]) -> None:
    """Every `--only` value must name something the suite has (a typo would silently select nothing)."""
    for key, values in only.items():
        have = sorted({_field(c, key) for c in cells})
        for value in values:
            if value not in have:
                raise ConfigError(f"--only {key}={value} matches no cell of this suite; its {key} values: "
                                  f"{', '.join(have)}")


def _make_cell(suite, method, dataset, protocol, variant, holdout, gallery, seed, backbone, max_steps, data):
    fields = {"method": method, "dataset": dataset, "protocol": protocol, "variant": variant, "holdout": holdout,
              "gallery": gallery, "seed": seed}
    data_options = copy.deepcopy(data)
    if gallery is not None:
        data_options["gallery"] = gallery
    steps = max_steps if max_steps is not None else suite.get("max_steps")
    method_overrides: dict[str, Any] = {}
    method_variant = None
    for ov in suite.get("overrides") or []:
        if not _matches(ov.get("where") or {}, fields):
            continue
        if ov.get("skip"):
            return None
        if "max_steps" in ov and max_steps is None:
            steps = ov["max_steps"]
        method_overrides.update(ov.get("method") or {})
        data_options.update(ov.get("data") or {})
        method_variant = ov.get("method_variant", method_variant)
    return Cell(method=method, dataset=dataset, protocol=protocol, variant=variant, holdout=holdout, seed=seed,
                backbone=backbone, method_variant=method_variant, max_steps=steps, data_options=data_options,
                method_overrides=method_overrides)


def parse_only(text: str | None) -> dict[str, list[str]] | None:
    """`method=a+b,dataset=c` -> {"method": ["a","b"], "dataset": ["c"]}."""
    if not text:
        return None
    out: dict[str, list[str]] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in WHERE_KEYS:
            raise ConfigError(f"bad --only item '{item}'; write key=value with key in {', '.join(WHERE_KEYS)}")
        out.setdefault(key, []).extend(value.split("+"))
    return out
