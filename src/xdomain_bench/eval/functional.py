"""Per-query metric values from the ranks of the relevant items (PROTOCOLS.md §7.2).

Every metric of §7.2 is a function of the 1-based ranks of the relevant items alone, so a chunk of
queries is summarised by a `RelevantRanks` block and each metric is a few vectorised float64 ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .metrics import MetricSpec

# Rank given to padding slots; never <= any cut-off.
PAD_RANK = torch.iinfo(torch.int64).max


@dataclass
class RelevantRanks:
    """Ranks of the relevant items of a chunk of queries, ascending per row.

    ranks:    (c, Rmax) int64, 1-based stable ranks; padding slots hold PAD_RANK and come last.
    n_rel:    (c,) int64, R per query (from label counts, self excluded).
    n_gallery: N, the number of candidates per query (gallery size, minus one under self-exclusion).
    ge:       (c, Rmax) int64 or None, number of candidates with score >= this item's score (sklearn ties).
    rel_ge:   (c, Rmax) int64 or None, number of relevant items with score >= this item's score.
    """

    ranks: torch.Tensor
    n_rel: torch.Tensor
    n_gallery: int
    ge: torch.Tensor | None = None
    rel_ge: torch.Tensor | None = None


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0 where den == 0 (empty queries score 0, §7.2)."""
    den = den.to(torch.float64)
    return torch.where(den > 0, num.to(torch.float64) / den.clamp(min=1), torch.zeros_like(den))


def _hits(rr: RelevantRanks, k: int | torch.Tensor) -> torch.Tensor:
    """H(k) per query; k may be a scalar or a per-query tensor."""
    kk = k if isinstance(k, int) else k[:, None]
    return (rr.ranks <= kk).sum(dim=1)


def _precisions(rr: RelevantRanks, k: int | torch.Tensor, tie_mode: str) -> torch.Tensor:
    """P at each relevant item inside the cut-off k, 0 elsewhere (c, Rmax) float64.

    stable:  P(i) = m / rank_m for the m-th relevant item.
    sklearn: precision at the item's score threshold inside the top-k slice (§7.1).
    """
    kk = k if isinstance(k, int) else k[:, None]
    inside = rr.ranks <= kk
    if tie_mode == "sklearn":
        assert rr.ge is not None and rr.rel_ge is not None
        hk = inside.sum(dim=1, keepdim=True)
        items = torch.minimum(rr.ge, torch.as_tensor(kk, device=rr.ge.device))
        prec = torch.minimum(rr.rel_ge, hk).to(torch.float64) / items.clamp(min=1).to(torch.float64)
    else:
        m = torch.arange(1, rr.ranks.shape[1] + 1, device=rr.ranks.device, dtype=torch.float64)
        prec = m[None, :] / rr.ranks.clamp(min=1).to(torch.float64)
    return torch.where(inside, prec, torch.zeros_like(prec))


def per_query_values(spec: MetricSpec, rr: RelevantRanks, tie_mode: str = "stable") -> torch.Tensor:
    """Values of one metric for each query of the block, (c,) float64."""
    n, R = rr.n_gallery, rr.n_rel
    if spec.kind == "prec":
        assert spec.k is not None
        return _hits(rr, spec.k).to(torch.float64) / max(min(spec.k, n), 1)
    if spec.kind == "hit":
        assert spec.k is not None
        return (rr.ranks[:, 0] <= spec.k).to(torch.float64) if rr.ranks.shape[1] else _zeros(R)
    if spec.kind == "recall":
        assert spec.k is not None
        return _safe_div(_hits(rr, spec.k), R)
    if spec.kind == "map_all":
        return _safe_div(_precisions(rr, n, tie_mode).sum(dim=1), R)
    if spec.kind == "map_k":
        assert spec.k is not None
        num = _precisions(rr, spec.k, tie_mode).sum(dim=1)
        if spec.norm == "A":
            return _safe_div(num, _hits(rr, spec.k))
        if spec.norm == "B":
            return _safe_div(num, R.clamp(max=spec.k))
        return _safe_div(num, R)
    if spec.kind == "r_prec":
        return _safe_div(_hits(rr, R), R)
    if spec.kind == "map_r":
        return _safe_div(_precisions(rr, R, "stable").sum(dim=1), R)
    raise ValueError(f"unhandled metric kind {spec.kind!r}")


def _zeros(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(like.shape[0], dtype=torch.float64, device=like.device)
