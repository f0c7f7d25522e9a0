"""How far one query can move a metric: the tolerance a golden comparison allows (benchmarks/golden/README.md).

Every retrieval metric here is a mean over queries of a per-query value in [0, 1] (or [0, 100] for the
image-text recalls, which are percentages), so one query whose ranking flips moves it by at most
1 / n_query of its scale. That is one query's worth: a change within it can be a single near-tie resolved
the other way; a real regression moves many queries. Image-text metrics average their source datasets
(each source weighs 1 / S), and RSUM adds six recalls.
"""

from __future__ import annotations

from typing import Any

ITR_SCALE = 100.0  # image-text recalls are percentages


def one_query(metric: str, counts: dict[str, Any]) -> float:
    """The largest change a single query (or caption) can make to `metric`, in the metric's own units."""
    source, _, name = metric.rpartition("/")
    by_source = counts.get("by_source") or {}
    if source:  # one source dataset's own metric
        sized = [by_source.get(source, counts)]
        weight = 1.0
    elif by_source:  # the unweighted mean over source datasets: a flip in the smallest source counts most
        sized = list(by_source.values())
        weight = 1.0 / len(sized)
    else:
        sized, weight = [counts], 1.0
    n_images = min(int(c.get("n_query") or 0) for c in sized)
    n_texts = min(int(c.get("n_gallery") or 0) for c in sized)
    if name.startswith(("i2t_", "t2i_", "mean_")) or name == "RSUM":
        i2t = ITR_SCALE / max(1, n_images)  # i2t recalls average over images, t2i over captions
        t2i = ITR_SCALE / max(1, n_texts)
        step = {"RSUM": 3 * (i2t + t2i), "mean": (i2t + t2i) / 2}.get(name.split("_")[0], 0.0)
        step = step or (i2t if name.startswith("i2t_") else t2i)
        return weight * step
    return weight / max(1, n_images)
