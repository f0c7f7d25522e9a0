"""Per-query metric values from the ranks of the relevant items (PROTOCOLS.md §7.2).

Every metric of §7.2 is a function of the 1-based ranks of the relevant items alone. With the ranks
of one query sorted ascending (rank_1 < rank_2 < ...), the m-th relevant item has P = m / rank_m,
H(k) = #{m : rank_m <= k}, and Σ_{i<=k} P(i)·rel(i) is a prefix sum of m / rank_m. So a chunk of
queries is summarised by one prefix-sum table, and each metric is O(1) per query after that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .metrics import MetricSpec

# Rank given to padding slots; never <= any cut-off.
PAD_RANK = torch.iinfo(torch.int64).max


@dataclass
class RelevantRanks:
    """Ranks of the relevant items of a chunk of queries.

    ranks:     (c, Rmax) int64, 1-based stable ranks ascending per row; padding (PAD_RANK) last.
    n_rel:     (c,) int64, R per query (from label counts, self excluded).
    n_gallery: N, the number of candidates per query (gallery size, minus one under self-exclusion).
    ge:        (c, Rmax) int64 or None, #candidates with score >= the item's score (sklearn ties).
    rel_ge:    (c, Rmax) int64 or None, #relevant items with score >= the item's score.
    """

    ranks: torch.Tensor
    n_rel: torch.Tensor
    n_gallery: int
    ge: torch.Tensor | None = None
    rel_ge: torch.Tensor | None = None
    _cum: torch.Tensor | None = field(default=None, repr=False)

    def hits(self, k: int | torch.Tensor) -> torch.Tensor:
        """H(k) per query; k is an int or a (c,) tensor of per-query cut-offs."""
        kk = torch.as_tensor(k, dtype=torch.int64, device=self.ranks.device)
        kk = kk.expand(self.ranks.shape[0]).reshape(-1, 1).contiguous()
        return torch.searchsorted(self.ranks, kk, right=True).reshape(-1)

    def ap_sum(self, k: int | torch.Tensor) -> torch.Tensor:
        """Σ_{i<=k} P(i)·rel(i) per query (stable ranking), float64."""
        if self._cum is None:
            c, rmax = self.ranks.shape
            m = torch.arange(1, rmax + 1, dtype=torch.float64, device=self.ranks.device)
            self._cum = torch.zeros(c, rmax + 1, dtype=torch.float64, device=self.ranks.device)
            torch.cumsum(m / self.ranks.to(torch.float64), dim=1, out=self._cum[:, 1:])
        return self._cum.gather(1, self.hits(k)[:, None]).reshape(-1)

    def ap_sum_sklearn(self, k: int) -> torch.Tensor:
        """Tie-aware (scikit-learn) Σ over the relevant items of the top-k slice of Prec at their threshold."""
        assert self.ge is not None and self.rel_ge is not None
        inside = self.ranks <= k
        hk = inside.sum(dim=1, keepdim=True)
        items = self.ge.clamp(max=k).clamp(min=1).to(torch.float64)
        prec = torch.minimum(self.rel_ge, hk).to(torch.float64) / items
        return torch.where(inside, prec, torch.zeros_like(prec)).sum(dim=1)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0 where den == 0 (empty queries score 0, §7.2)."""
    den = den.to(torch.float64)
    return torch.where(den > 0, num.to(torch.float64) / den.clamp(min=1), torch.zeros_like(den))


def per_query_values(spec: MetricSpec, rr: RelevantRanks, tie_mode: str = "stable") -> torch.Tensor:
    """Values of one metric for each query of the block, (c,) float64.

    ``tie_mode="sklearn"`` changes mAP@k and mAP@all only (§7.1); the other metrics use the stable rule.
    """
    n, R = rr.n_gallery, rr.n_rel
    k = spec.k if spec.k is not None else n
    if spec.kind == "prec":
        return rr.hits(k).to(torch.float64) / max(min(k, n), 1)
    if spec.kind == "hit":
        return (rr.hits(k) > 0).to(torch.float64)
    if spec.kind == "recall":
        return _safe_div(rr.hits(k), R)
    if spec.kind == "r_prec":
        return _safe_div(rr.hits(R), R)
    if spec.kind == "map_r":
        return _safe_div(rr.ap_sum(R), R)
    if spec.kind not in ("map_k", "map_all"):
        raise ValueError(f"unhandled metric kind {spec.kind!r}")
    num = rr.ap_sum_sklearn(k) if tie_mode == "sklearn" else rr.ap_sum(k)
    if spec.kind == "map_all" or spec.norm == "C":
        return _safe_div(num, R)
    if spec.norm == "B":
        return _safe_div(num, R.clamp(max=k))
    return _safe_div(num, rr.hits(k))
