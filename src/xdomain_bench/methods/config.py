"""Method cards (methods/<name>.yaml): defaults, variants, per-dataset overrides, provenance.

Resolution order: card defaults <- variant <- dataset override <- user overrides (suite cell / CLI).
Unknown override keys fail with the list of valid ones (DomainBed-style hyperparameter registry).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ..errors import ConfigError
from ..paths import method_cards_dir


def load_card(name: str) -> dict[str, Any]:
    path = method_cards_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"method card missing: {path}; every registered method needs one")
    card = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "defaults" not in card:
        raise ConfigError(f"method card {path} has no 'defaults' section")
    return card


def _merge(base: dict[str, Any], update: dict[str, Any], where: str, strict: bool = True) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if strict and key not in out:
            raise ConfigError(f"unknown option '{key}' in {where}; valid options: {', '.join(sorted(out))}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}.{key}", strict=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(name: str, variant: str | None = None, dataset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved hyperparameters of one method for one cell."""
    card = load_card(name)
    cfg = copy.deepcopy(card["defaults"])
    variants = card.get("variants", {}) or {}
    variant = variant or card.get("default_variant")
    if variant is not None:
        if variant not in variants:
            raise ConfigError(f"method '{name}' has no variant '{variant}'; known: {', '.join(sorted(variants)) or 'none'}")
        cfg = _merge(cfg, variants[variant] or {}, f"methods/{name}.yaml variants.{variant}")
    if dataset is not None:
        cfg = _merge(cfg, (card.get("datasets", {}) or {}).get(dataset, {}) or {}, f"methods/{name}.yaml datasets.{dataset}")
    cfg = _merge(cfg, overrides or {}, f"overrides for method '{name}'")
    cfg["variant"] = variant
    return cfg
