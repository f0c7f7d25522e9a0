"""Method cards (methods/<name>.yaml): defaults, variants, per-dataset overrides, provenance.

Resolution order: card defaults <- variant <- dataset override <- user layers (suite overrides, `--set`).
After every layer the merged config is validated against the method's declared schema (`schemas.py`), so
an error names the layer that introduced it: an unknown key at any depth, a wrong type or a value out of
range is one line with the key, its source and the valid choices.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from ..paths import find_resource, method_cards_dir

Layer = tuple[str, dict[str, Any]]  # (where it came from, partial config)


def load_card(name: str) -> dict[str, Any]:
    path = find_resource("methods", f"{name}.yaml", method_cards_dir())
    if not path.is_file():
        raise ConfigError(f"method card missing: {path}; every registered method needs one (an external one goes "
                          "in CARDS/methods/, with --cards CARDS or XBENCH_CARDS)")
    card = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "defaults" not in card:
        raise ConfigError(f"method card {path} has no 'defaults' section")
    return card


def deep_merge(base: dict[str, Any], update: dict[str, Any] | None) -> dict[str, Any]:
    """`base` with `update` merged in; nested mappings merge key by key, anything else replaces.

    A mapping that names another `name` (e.g. optimizer adam over sgd) replaces the old one whole, so options
    of the old choice (sgd's momentum) do not linger."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        old = out.get(key)
        renamed = isinstance(old, dict) and isinstance(value, dict) and "name" in value and value["name"] != old.get("name")
        if isinstance(value, dict) and isinstance(old, dict) and not renamed:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dotted(key: str, value: Any) -> dict[str, Any]:
    """`phases.phase2.batch_size`, 64 -> {"phases": {"phase2": {"batch_size": 64}}}."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"bad option name '{key}'; write dotted keys like optimizer.lr")
    out: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


def _card_layers(name: str, card: dict[str, Any], variant: str | None, dataset: str | None) -> list[Layer]:
    variants = card.get("variants", {}) or {}
    layers: list[Layer] = []
    if variant is not None:
        if variant not in variants:
            raise ConfigError(f"method '{name}' has no variant '{variant}'; known: {', '.join(sorted(variants)) or 'none'}")
        layers.append((f"methods/{name}.yaml variants.{variant}", variants[variant] or {}))
    if dataset is not None:
        layers.append((f"methods/{name}.yaml datasets.{dataset}", (card.get("datasets", {}) or {}).get(dataset) or {}))
    return layers


def resolve_config(name: str, variant: str | None = None, dataset: str | None = None,
                   overrides: dict[str, Any] | None = None, *, layers: list[Layer] | None = None) -> dict[str, Any]:
    """The validated hyperparameters of one method for one cell.

    `overrides` is one user layer (source: "overrides"); `layers` are further (source, partial config) pairs
    applied in order, e.g. [("suite S overrides[2]", {...}), ("--set", {...})]."""
    card = load_card(name)
    schema = method_schema(name)
    variant = variant or card.get("default_variant")
    all_layers = _card_layers(name, card, variant, dataset)
    if overrides:
        all_layers.append((f"overrides for method '{name}'", overrides))
    all_layers.extend(layers or [])
    cfg = validate(schema, card["defaults"], name, f"methods/{name}.yaml defaults")
    for where, update in all_layers:
        if not isinstance(update, dict):
            raise ConfigError(f"{where}: method options for '{name}' must be a mapping, got {update!r}")
        cfg = validate(schema, deep_merge(cfg, update), name, where)
    cfg["variant"] = variant
    return cfg


def method_schema(name: str):
    """The declared schema of a registered method: its own, else that of the method it derives from."""
    from .base import get_method_class
    from .schemas import SCHEMAS

    for klass in get_method_class(name).__mro__:
        schema = klass.__dict__.get("config_schema") or SCHEMAS.get(klass.__dict__.get("name"))  # plugins: attribute
        if schema is not None:
            return schema
    raise ConfigError(f"method '{name}' has no declared schema; add one to methods/schemas.py (a plugin sets "
                      "config_schema on its class)")


def validate(schema, cfg: dict[str, Any], method: str, where: str) -> dict[str, Any]:
    """`cfg` checked and coerced by `schema` (only the keys it has), or a one-line ConfigError."""
    try:
        return schema.model_validate(cfg).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, schema, f"method '{method}' (from {where})")) from None


def describe_error(exc: ValidationError, schema, subject: str) -> str:
    """The first validation error as one line: key, `subject` (what and where), problem, valid choices."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo explains the rest
    loc = _keys(errors[0]["loc"])
    key = ".".join(loc)
    if errors[0]["type"] == "extra_forbidden":
        under = f" under {'.'.join(loc[:-1])}" if loc[:-1] else ""
        return (f"unknown option '{key}' for {subject}; "
                f"valid keys{under}: {', '.join(schema_keys(schema, loc[:-1]))}")
    # a union reports one error per member: say what each member wanted
    msgs = list(dict.fromkeys(_sub_message(e, len(loc)) for e in errors if _keys(e["loc"])[:len(loc)] == loc))
    got = errors[0].get("input")
    got_text = "" if isinstance(got, dict) else f", got {got!r}"
    what = f"bad value for '{key}'" if key else "inconsistent options"
    return f"{what} of {subject}: {' or '.join(msgs)}{got_text}"


def _sub_message(error: dict[str, Any], depth: int) -> str:
    below = ".".join(_keys(error["loc"])[depth:])
    msg = error["msg"].removeprefix("Value error, ")
    return f"{below}: {msg}" if below else msg


def _keys(loc: tuple) -> list[str]:
    """Config keys of an error location, without pydantic's names of union members (e.g. `literal['none']`)."""
    return [str(p) for p in loc if not ("[" in str(p) or str(p)[:1].isupper() or str(p).startswith("function-"))]


def schema_keys(schema, path: list[str]) -> list[str]:
    """The keys a schema accepts under `path`, through nested models, optionals, unions, dicts and lists."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    current: Any = schema
    for part in path:
        models = [a for a in _flatten(current) if isinstance(a, type) and issubclass(a, BaseModel)]
        containers = [a for a in _flatten_shallow(current) if get_origin(a) in (dict, list)]
        if models and part in models[0].model_fields:
            current = models[0].model_fields[part].annotation
        elif containers:  # a free key of a mapping, or an index of a list
            current = get_args(containers[0])[-1]
        else:
            return []
    models = [a for a in _flatten(current) if isinstance(a, type) and issubclass(a, BaseModel)]
    return sorted(models[0].model_fields) if models else []


def _flatten_shallow(annotation: Any) -> list[Any]:
    """Members of a union / optional (not looking inside dicts and lists)."""
    from types import UnionType
    from typing import Union, get_args, get_origin

    if get_origin(annotation) in (Union, UnionType):
        return [leaf for arg in get_args(annotation) for leaf in _flatten_shallow(arg)]
    return [annotation]


def _flatten(annotation: Any) -> list[Any]:
    """Union members and Annotated bases, not looking inside dicts and lists."""
    from typing import Annotated, get_args, get_origin

    out = []
    for member in _flatten_shallow(annotation):
        out.append(get_args(member)[0] if get_origin(member) is Annotated else member)
    return out


def phase_configs(cfg: dict[str, Any], phases: list[str]) -> dict[str, dict[str, Any]]:
    """Each phase's schedule keys: `phases.<name>` of the config over its top-level keys."""
    out = {}
    for phase in phases:
        merged = {k: v for k, v in cfg.items() if k != "phases"}
        merged.update((cfg.get("phases") or {}).get(phase) or {})
        out[phase] = merged
    return out
