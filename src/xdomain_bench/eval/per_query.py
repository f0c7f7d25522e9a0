"""Per-query results gathered during the engine's chunk pass: each query's top-k gallery items (stable order:
descending score, ties by ascending gallery index, as the ranks of §7.1), its AP over the whole ranking and
its number of relevant items. Pass a `PerQuery` as the engine's `on_chunk`."""

from __future__ import annotations

import numpy as np
import torch

from .functional import RelevantRanks, per_query_values
from .metrics import parse_metric, parse_metrics

DEFAULT_TOP_K = 100
AP_METRIC = "mAP@all"


def top_k_size(metrics, cap: int) -> int:
    """The largest cut-off among `metrics` (the cap when none has one), capped at `cap`."""
    cutoffs = [s.k for s in parse_metrics(list(metrics)) if s.k is not None]
    return min(max(cutoffs, default=cap), cap)


def stable_top_k(S: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, scores) of the k best entries of each row of S, best first; equal scores by ascending index.

    torch.topk finds each row's k-th best score t; every entry >= t is a candidate (k of them, more where t is
    tied), and the candidates are ordered by (-score, index)."""
    c, n = S.shape
    k = min(k, n)
    if k == 0 or c == 0:
        return torch.zeros(c, k, dtype=torch.int64), torch.zeros(c, k, dtype=S.dtype)
    S = S.cpu()
    kth = torch.topk(S, k, dim=1, sorted=True).values[:, -1:]
    cand = S >= kth
    idx = torch.empty(c, k, dtype=torch.int64)
    for r in range(c):
        pos = cand[r].nonzero().reshape(-1)  # ascending gallery index
        order = torch.sort(-S[r, pos], stable=True).indices[:k]
        idx[r] = pos[order]
    return idx, S.gather(1, idx)


class PerQuery:
    """Collects per-query results chunk by chunk (`__call__(q0, S, rr)`), for queries in the engine's order.
    AP follows the engine's tie rule: tie-aware (scikit-learn) where it counted ties, else stable."""

    def __init__(self, top_k: int = DEFAULT_TOP_K) -> None:
        self.top_k = int(top_k)
        self.parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_gallery: int | None = None
        self.ap_tie_mode = "stable"

    def __call__(self, q0: int, S: torch.Tensor, rr: RelevantRanks) -> None:
        self.n_gallery = int(S.shape[1])
        k = min(self.top_k, rr.n_gallery)  # never past the candidates (self excluded under same-set)
        idx, val = stable_top_k(S, k)
        self.ap_tie_mode = "sklearn" if rr.ge is not None else "stable"
        ap = per_query_values(parse_metric(AP_METRIC), rr, self.ap_tie_mode).cpu().numpy()
        self.parts.append((q0, idx.numpy(), val.numpy(), ap, rr.n_rel.cpu().numpy()))

    @property
    def filled(self) -> bool:
        return bool(self.parts)

    def arrays(self) -> dict[str, np.ndarray]:
        """top_index (Nq, k) int64, top_score (Nq, k), ap (Nq,) float64, n_relevant (Nq,) int64."""
        parts = sorted(self.parts, key=lambda p: p[0])
        return {"top_index": np.concatenate([p[1] for p in parts]), "top_score": np.concatenate([p[2] for p in parts]),
                "ap": np.concatenate([p[3] for p in parts]), "n_relevant": np.concatenate([p[4] for p in parts])}
