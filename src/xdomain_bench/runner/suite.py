"""Suites: YAML matrices of methods × datasets × protocols × variants × seeds (× held-out domains, galleries).

A suite is validated whole when it is loaded: its own keys and types against `SuiteFile`, then every cell's
budget and resolved method config (card + suite overrides), so no typo is found only when its cell runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from ..errors import ConfigError
from ..methods.config import deep_merge, describe_error, resolve_config
from .budget import parse_budget
from .records import Cell

WHERE_KEYS = ("method", "dataset", "protocol", "variant", "holdout", "gallery", "seed")
Scalar = str | int | None
Match = Scalar | list[Scalar]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProtocolSpec(_Strict):
    holdouts: list[str] | None = None
    galleries: list[str] | None = None
    variants: list[Literal["clean", "paper"]] | None = None
    data: dict[str, Any] | None = None


class DatasetSpec(_Strict):
    protocols: dict[str, ProtocolSpec | None]


class Where(_Strict):
    method: Match = None
    dataset: Match = None
    protocol: Match = None
    variant: Match = None
    holdout: Match = None
    gallery: Match = None
    seed: Match = None


class Override(_Strict):
    where: Where | None = None
    budget: str | dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    skip: StrictBool = False
    method_variant: str | None = None


class SuiteFile(_Strict):
    name: str
    description: str | None = None
    backbone: str | None = None
    seeds: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)] = [0]
    budget: str | dict[str, Any]
    methods: Literal["all"] | list[str]
    variants: list[Literal["clean", "paper"]] | None = None
    datasets: dict[str, DatasetSpec | None]
    overrides: list[Override] = []


def load_suite(path: str | Path) -> dict[str, Any]:
    """The suite's mapping, checked against `SuiteFile` (types, unknown keys, a budget that parses)."""
    from ..paths import suite_names, suite_path

    path = suite_path(path)
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}; give a suite file or a built-in suite name: "
                          f"{', '.join(suite_names())}")
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed suite {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(suite, dict):
        raise ConfigError(f"suite {path} must be a mapping with keys {', '.join(SuiteFile.model_fields)}")
    if "max_steps" in suite or any(isinstance(o, dict) and "max_steps" in o for o in suite.get("overrides") or []):
        raise ConfigError(f"suite {path}: 'max_steps' is no longer a suite key; state a budget instead, "
                          "e.g. budget: {policy: steps, steps: 40} (or policy paper / matched)")
    try:
        SuiteFile.model_validate(suite)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, SuiteFile, f"suite {path}")) from None
    parse_budget(suite["budget"], f"suite {path} budget")
    for i, ov in enumerate(suite.get("overrides") or []):
        if ov.get("budget") is not None:
            parse_budget(ov["budget"], f"suite {path} overrides[{i}].budget")
    suite["_path"] = str(path)
    return suite


def _matches(where: dict[str, Any], fields: dict[str, Any]) -> bool:
    for key, want in where.items():
        if want is None:
            continue
        wanted = want if isinstance(want, list) else [want]
        if fields.get(key) not in wanted:
            return False
    return True


def expand_suite(suite: dict[str, Any], *, backbone: str | None = None, seeds: list[int] | None = None,
                 budget: str | None = None, only: dict[str, list[str]] | None = None) -> list[Cell]:
    """All cells of a suite, in a stable order, with per-cell overrides applied and every config validated.

    `budget` (a label such as steps:40, from --budget or --max-steps) replaces the suite's and its overrides'."""
    from ..data.base import dataset_names, get_dataset
    from ..methods.base import method_names

    path = suite["_path"]
    known_methods = method_names()
    methods = known_methods if suite["methods"] == "all" else list(suite["methods"])
    for m in methods:
        if m not in known_methods:
            raise ConfigError(f"suite {path}: unknown method '{m}'; known: {', '.join(known_methods)}")
    seeds = seeds if seeds is not None else list(suite.get("seeds") or [0])
    backbone = backbone or suite.get("backbone") or "tiny-clip"
    cells: list[Cell] = []
    validated: set[str] = set()  # each distinct method config is resolved (and so checked) once
    for dname, dspec in suite["datasets"].items():
        if dname not in dataset_names():
            raise ConfigError(f"suite {path}: unknown dataset '{dname}'; known: {', '.join(dataset_names())}")
        for pname, pspec in ((dspec or {}).get("protocols") or {}).items():
            get_dataset(dname).protocol_info(pname)  # unknown protocol -> one line naming the known ones
            pspec = pspec or {}
            for method in methods:
                for variant in pspec.get("variants") or suite.get("variants") or ["clean"]:
                    for holdout in pspec.get("holdouts") or [None]:
                        for gallery in pspec.get("galleries") or [None]:
                            for seed in seeds:
                                fields = {"method": method, "dataset": dname, "protocol": pname, "variant": variant,
                                          "holdout": holdout, "gallery": gallery, "seed": seed}
                                cell = _make_cell(suite, fields, backbone, budget, pspec.get("data") or {},
                                                  validated)
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


def _make_cell(suite: dict[str, Any], fields: dict[str, Any], backbone: str, cli_budget: str | None,
               data: dict[str, Any], validated: set[str]) -> Cell | None:
    path = suite["_path"]
    data_options = dict(data)
    if fields["gallery"] is not None:
        data_options["gallery"] = fields["gallery"]
    budget = parse_budget(suite["budget"], f"suite {path} budget")
    layers: list[tuple[str, dict[str, Any]]] = []
    method_variant = None
    for i, ov in enumerate(suite.get("overrides") or []):
        if not _matches(ov.get("where") or {}, fields):
            continue
        if ov.get("skip"):
            return None
        if ov.get("budget") is not None:
            budget = parse_budget(ov["budget"], f"suite {path} overrides[{i}].budget")
        if ov.get("method"):
            layers.append((f"suite {path} overrides[{i}].method", ov["method"]))
        data_options.update(ov.get("data") or {})
        method_variant = ov.get("method_variant", method_variant)
    if cli_budget is not None:
        budget = parse_budget(cli_budget, "--budget")
    overrides: dict[str, Any] = {}
    for _, layer in layers:
        overrides = deep_merge(overrides, layer)
    key = json.dumps([fields["method"], method_variant, fields["dataset"], layers], sort_keys=True, default=str)
    if key not in validated:
        resolve_config(fields["method"], method_variant, fields["dataset"], layers=layers)
        validated.add(key)
    return Cell(method=fields["method"], dataset=fields["dataset"], protocol=fields["protocol"],
                variant=fields["variant"], holdout=fields["holdout"], seed=fields["seed"], backbone=backbone,
                method_variant=method_variant, budget=budget.label, data_options=data_options,
                method_overrides=overrides)


def parse_only(items: str | list[str] | None) -> dict[str, list[str]] | None:
    """`method=coop,vpt,dataset=cub` (or repeated: --only method=coop,vpt --only dataset=cub) ->
    {"method": ["coop", "vpt"], "dataset": ["cub"]}: a comma item without `=` adds a value to the key before it.
    The old `+` separator (method=coop+vpt) still works, with a deprecation note."""
    if not items:
        return None
    out: dict[str, list[str]] = {}
    key = None
    for text in [items] if isinstance(items, str) else items:
        for item in text.split(","):
            name, sep, value = item.partition("=")
            if sep:
                key = name
                if key not in WHERE_KEYS:
                    raise ConfigError(f"bad --only item '{item}'; write key=value with key in {', '.join(WHERE_KEYS)}")
            elif key is None or not item:
                raise ConfigError(f"bad --only item '{item}' in '{text}'; write key=a,b,key2=c with key in "
                                  f"{', '.join(WHERE_KEYS)}")
            else:
                value = item
            if "+" in value:
                from ..options import deprecated

                deprecated(f"'+' in --only {key}={value}", f"commas: --only {key}={value.replace('+', ',')}")
            out.setdefault(key, []).extend(value.split("+"))
    return out
