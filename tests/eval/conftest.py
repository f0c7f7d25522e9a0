"""Independent float64 brute-force references, written straight from PROTOCOLS.md §7 with plain loops."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest


def stable_order(row: np.ndarray, candidates: list[int]) -> list[int]:
    """Descending score, ties by ascending gallery index (§7.1)."""
    return sorted(candidates, key=lambda i: (-float(row[i]), i))


def _ap_sklearn_style(scores: list[float], rel: list[int]) -> float:
    """Σ_t ΔTP_t · Prec_t over distinct thresholds of the given items (unnormalised)."""
    total, tp_prev = 0.0, 0
    for t in sorted(set(scores), reverse=True):
        tp = sum(r for s, r in zip(scores, rel) if s >= t)
        n = sum(1 for s in scores if s >= t)
        total += (tp - tp_prev) * tp / n
        tp_prev = tp
    return total


def query_metric(name: str, row: np.ndarray, rel_mask: np.ndarray, exclude: int | None, tie_mode: str) -> float:
    """One metric for one query, by the definitions of §7.2."""
    cand = [i for i in range(len(row)) if i != exclude]
    order = stable_order(row, cand)
    rel = [int(rel_mask[i]) for i in order]
    N, R = len(order), sum(rel)

    def H(k: int) -> int:
        return sum(rel[:k])

    def ap_sum(k: int) -> float:
        if tie_mode == "sklearn":
            return _ap_sklearn_style([float(row[i]) for i in order[:k]], rel[:k])
        return sum(H(i) / i for i in range(1, min(k, N) + 1) if rel[i - 1])

    if m := re.fullmatch(r"Prec@(\d+)", name):
        k = int(m.group(1))
        return H(k) / min(k, N)
    if m := re.fullmatch(r"mAP@(\d+)(?::([ABC]))?", name):
        k, norm = int(m.group(1)), m.group(2) or "A"
        den = {"A": H(k), "B": min(k, R), "C": R}[norm]
        return ap_sum(k) / den if den else 0.0
    if name == "mAP@all":
        return ap_sum(N) / R if R else 0.0
    if m := re.fullmatch(r"R@(\d+)", name):
        return float(H(int(m.group(1))) >= 1)
    if m := re.fullmatch(r"Recall@(\d+)", name):
        return H(int(m.group(1))) / R if R else 0.0
    if name == "R-Precision":
        return H(R) / R if R else 0.0
    if name == "MAP@R":
        return sum(H(i) / i for i in range(1, R + 1) if rel[i - 1]) / R if R else 0.0
    raise KeyError(name)


def class_metrics(
    scores: np.ndarray,
    query_labels,
    gallery_labels,
    names: list[str],
    *,
    same_set: bool = False,
    tie_mode: str = "stable",
) -> dict[str, float]:
    """Mean of each metric over all queries (R = 0 queries score 0 and count)."""
    scores = np.asarray(scores, dtype=np.float64)
    gl = np.asarray(gallery_labels)
    out = {}
    for name in names:
        vals = [
            query_metric(name, scores[q], gl == ql, q if same_set else None, tie_mode)
            for q, ql in enumerate(np.asarray(query_labels))
        ]
        out[name] = float(np.mean(vals))
    out["n_queries_no_relevant"] = sum(
        int(sum(gl[i] == ql for i in range(len(gl)) if not (same_set and i == q)) == 0)
        for q, ql in enumerate(np.asarray(query_labels))
    )
    return out


def first_hit_rank(row: np.ndarray, relevant: set[int]) -> int | None:
    """1-based rank of the best-ranked relevant item under the stable rule, None if none."""
    for pos, i in enumerate(stable_order(row, list(range(len(row)))), start=1):
        if i in relevant:
            return pos
    return None


def itr_metrics(image_emb, text_emb, owner, texts, dedupe: bool, ks=(1, 5, 10)) -> dict[str, float]:
    """Image-text R@K ×100 with the relevance rules of §7.2, by brute force in float64."""
    img = np.asarray(image_emb, dtype=np.float64)
    txt = np.asarray(text_emb, dtype=np.float64)
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = img @ txt.T
    norm = [" ".join(t.split()) for t in texts] if dedupe else None

    def equivalent(t1: int, t2: int) -> bool:
        return t1 == t2 or (norm is not None and norm[t1] == norm[t2])

    own = {i: [t for t in range(len(owner)) if owner[t] == i] for i in range(len(img))}
    out = {}
    for k in ks:
        i2t = [first_hit_rank(sim[i], {t for t in range(len(txt)) if any(equivalent(t, c) for c in own[i])})
               for i in range(len(img))]  # fmt: skip
        t2i = [first_hit_rank(sim[:, t], {i for i in range(len(img)) if any(equivalent(t, c) for c in own[i])})
               for t in range(len(txt))]  # fmt: skip
        out[f"i2t_R@{k}"] = 100.0 * np.mean([r is not None and r <= k for r in i2t])
        out[f"t2i_R@{k}"] = 100.0 * np.mean([r is not None and r <= k for r in t2i])
    out["RSUM"] = sum(v for key, v in out.items() if "_R@" in key)
    return out


@pytest.fixture
def brute() -> SimpleNamespace:
    """The brute-force references as a namespace."""
    return SimpleNamespace(
        class_metrics=class_metrics, query_metric=query_metric, itr_metrics=itr_metrics, stable_order=stable_order
    )


ALL_METRICS = [
    "Prec@1", "Prec@5", "Prec@30", "Prec@500",
    "mAP@1", "mAP@5", "mAP@5:B", "mAP@5:C", "mAP@30", "mAP@30:B", "mAP@30:C", "mAP@500:B",
    "mAP@all", "R@1", "R@2", "R@4", "R@8", "Recall@5", "Recall@30", "MAP@R", "R-Precision",
]  # fmt: skip


@pytest.fixture
def all_metrics() -> list[str]:
    return list(ALL_METRICS)
