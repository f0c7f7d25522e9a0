"""Metric names (PROTOCOLS.md §7.2): parsing and validation.

Accepted forms (k, K positive integers):

- ``Prec@k``                      precision at k, ``H(k) / min(k, N)``
- ``mAP@k`` / ``mAP@k:A|B|C``     AP@k with normalisation A (default), B or C
- ``mAP@all``                     full AP (A = B = C)
- ``R@K``                         DML Recall@K (hit rate)
- ``Recall@k``                    IR recall, ``H(k) / R``
- ``MAP@R``                       Musgrave et al. 2020
- ``R-Precision``                 ``H(R) / R``
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError

VALID_FORMS = "Prec@k, mAP@k, mAP@k:A, mAP@k:B, mAP@k:C, mAP@all, R@K, Recall@k, MAP@R, R-Precision"

# Kinds: prec, map_k, map_all, hit, recall, map_r, r_prec.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("prec", re.compile(r"Prec@(\d+)")),
    ("map_k", re.compile(r"mAP@(\d+)(?::([ABC]))?")),
    ("map_all", re.compile(r"mAP@all")),
    ("hit", re.compile(r"R@(\d+)")),
    ("recall", re.compile(r"Recall@(\d+)")),
    ("map_r", re.compile(r"MAP@R")),
    ("r_prec", re.compile(r"R-Precision")),
)


@dataclass(frozen=True)
class MetricSpec:
    """One requested metric: the name as given, its kind, cut-off k and AP normalisation."""

    name: str
    kind: str
    k: int | None = None
    norm: str | None = None

    @property
    def is_ap(self) -> bool:
        return self.kind in ("map_k", "map_all")


def parse_metric(name: str) -> MetricSpec:
    """Parse one metric name; an unknown or malformed name raises ConfigError listing the valid forms."""
    if not isinstance(name, str):
        raise ConfigError(f"metric names must be strings, got {name!r}; valid forms: {VALID_FORMS}")
    text = name.strip()
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(text)
        if m is None:
            continue
        k = int(m.group(1)) if pattern.groups >= 1 and m.group(1) is not None else None
        if k is not None and k < 1:
            raise ConfigError(f"metric '{text}': the cut-off must be a positive integer; valid forms: {VALID_FORMS}")
        norm = (m.group(2) or "A") if kind == "map_k" else None
        return MetricSpec(name=text, kind=kind, k=k, norm=norm)
    raise ConfigError(f"unknown metric '{text}'; valid forms: {VALID_FORMS} (k, K positive integers)")


def parse_metrics(names: Sequence[str] | str) -> list[MetricSpec]:
    """Parse a sequence (or comma-separated string) of metric names, dropping exact duplicates."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    specs: list[MetricSpec] = []
    seen: set[str] = set()
    for name in names:
        spec = parse_metric(name)
        if spec.name not in seen:
            seen.add(spec.name)
            specs.append(spec)
    if not specs:
        raise ConfigError(f"no metrics requested; give at least one of: {VALID_FORMS}")
    return specs
