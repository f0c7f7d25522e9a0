"""Per-domain and per-class AP from the saved per-query results: each group's mean AP per seed, then the mean
over a method's seeds; the classes shown are those where the methods' AP spreads widest."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

N_CLASSES = 10


def group_ap(pq: dict[str, Any], key: str) -> pd.Series:
    """Mean AP of the queries of each value of `key` (e.g. query_domain, query_class_name)."""
    return pd.Series(pq["ap"]).groupby(np.asarray(pq[key])).mean()


def method_group_ap(per_method: dict[str, list[dict[str, Any]]], key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, std over seeds) frames: one row per group, one column per method; std NaN for one seed."""
    means, stds = {}, {}
    for method, pqs in per_method.items():
        seeds = pd.concat([group_ap(pq, key) for pq in pqs], axis=1)
        means[method] = seeds.mean(axis=1)
        stds[method] = seeds.std(axis=1, ddof=1)  # NaN for one seed
    return pd.DataFrame(means), pd.DataFrame(stds)


def widest_spread(frame: pd.DataFrame, n: int = N_CLASSES) -> pd.DataFrame:
    """The `n` rows whose values differ most across columns (max - min; ties by name); all rows for one
    column, by ascending value (the hardest classes)."""
    if frame.shape[1] < 2:
        return frame.sort_values(frame.columns[0], kind="stable").head(n)
    spread = frame.max(axis=1) - frame.min(axis=1)
    order = sorted(frame.index, key=lambda c: (-float(spread[c]), str(c)))
    return frame.loc[order[:n]]
