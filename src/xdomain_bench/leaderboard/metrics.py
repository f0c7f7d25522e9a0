"""Per-protocol metric columns: which metrics a table holds, in what order, on what scale, and how a value
reads. Records store class-retrieval metrics as fractions and image-text R@K (and RSUM) as percentages; the
tables show each on the papers' scale: R@K in percent with 2 decimals, mAP/Prec/MAP@R/R-Precision as fractions
with 4 decimals (PROTOCOLS.md §8)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

# Column families, in table order; within a family k ascends ("all" last). RSUM always comes last.
FAMILIES = ("mean_R@", "i2t_R@", "t2i_R@", "R@", "mAP@", "Prec@", "MAP@R", "R-Precision")
STORED_PERCENT = ("mean_R@", "i2t_R@", "t2i_R@", "RSUM")  # image-text metrics are recorded ×100
_K = re.compile(r"@(\d+|all)$")


def metric_sort_key(metric: str) -> tuple:
    if metric == "RSUM":
        return (len(FAMILIES) + 1, 0, metric)
    family = next((i for i, f in enumerate(FAMILIES) if metric.startswith(f)), len(FAMILIES))
    m = _K.search(metric)
    k = math.inf if m and m.group(1) == "all" else (int(m.group(1)) if m else 0)
    return (family, k, metric)


def order_metrics(metrics) -> list[str]:
    return sorted(set(metrics), key=metric_sort_key)


@dataclass(frozen=True)
class Scale:
    """How a stored value becomes a shown one: shown = stored × factor, with `digits` decimals."""

    factor: float
    digits: int
    unit: str  # "0–1", "%" or "sum of %"

    def show(self, value: float) -> float:
        return value * self.factor


def metric_scale(metric: str) -> Scale:
    if metric == "RSUM":
        return Scale(1.0, 2, "sum of %")
    if metric.startswith(STORED_PERCENT):
        return Scale(1.0, 2, "%")
    if metric.startswith("R@"):  # DML Recall@K, stored as a fraction, quoted in percent
        return Scale(100.0, 2, "%")
    return Scale(1.0, 4, "0–1")


def stored_from_reported(metric: str, value: float) -> float:
    """A published number on our stored scale: papers quote some fractions in percent (a value above 1)."""
    if not metric.startswith(STORED_PERCENT) and value > 1.0:
        return value / 100.0
    return value


def header(metric: str) -> str:
    return f"{metric} ({metric_scale(metric).unit})"


def fmt_number(metric: str, value: float, sign: bool = False) -> str:
    scale = metric_scale(metric)
    return f"{scale.show(value):{'+' if sign else ''}.{scale.digits}f}"


def fmt_stat(metric: str, mean: float, std: float | None, n: int | None) -> str:
    """`mean ± std (n)` on the shown scale; "—" for the std of a single seed; a bare number for a reported value."""
    if n is None:
        return fmt_number(metric, mean)
    spread = "—" if n < 2 or std is None or math.isnan(std) else fmt_number(metric, std)
    return f"{fmt_number(metric, mean)} ± {spread} ({n})"


@dataclass(frozen=True)
class ProtocolMetrics:
    primary: str
    metrics: tuple[str, ...]  # the primary and the also-reported metrics, in table order
    task: str  # "class" or "itr"
    holdouts: tuple[str, ...]  # held-out query domains a domain average covers in full; () if none


@cache
def protocol_metrics(dataset: str, protocol: str) -> ProtocolMetrics | None:
    """From the dataset card; None for a dataset or protocol this checkout does not know (an old record)."""
    from ..data.base import get_dataset
    from ..errors import XBenchError

    try:
        adapter = get_dataset(dataset)
        info = adapter.protocol_info(protocol)
        holdouts = tuple(h for h in adapter.holdouts(protocol) if h)
    except XBenchError:
        return None
    return ProtocolMetrics(info.primary_metric, tuple(order_metrics(info.metrics)), info.task, holdouts)
