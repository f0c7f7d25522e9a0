"""Exact stable ranks of the relevant items of a block of queries (PROTOCOLS.md §7.1).

The rank of a relevant item j with score s in one query row is

    1 + #{i : S_i > s} + #{i < j : S_i == s}

(descending score, ties by ascending gallery index). Two interchangeable back-ends:

- ``search`` (CPU): sort the *values* of each row (numpy's vectorised sort, no indices), find
  #{S_i > s} by binary search, and add the index tie term only for items whose score is shared with
  another item (found by one scan of that row). No N×N argsort is formed.
- ``sort`` (any device, used on GPU): a stable argsort of ``-S`` per row and its inverse permutation.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import InputError
from .functional import PAD_RANK, RelevantRanks

# Above this many distinct tied values in one row, a full stable argsort of that row is cheaper.
_MAX_TIE_VALUES = 16
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()))
    return _POOL


def sort_rows_into(src: np.ndarray, dst: np.ndarray) -> None:
    """dst[:] = src sorted ascending along rows, split over threads (numpy releases the GIL)."""
    n = src.shape[0]
    workers = max(1, min(torch.get_num_threads(), n))
    bounds = np.linspace(0, n, workers + 1).astype(int)

    def work(a: int, b: int) -> None:
        dst[a:b] = src[a:b]
        dst[a:b].sort(axis=1)

    if workers == 1:
        work(0, n)
        return
    futures = [_pool().submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()


def _raise_nan(row: int) -> None:
    raise InputError(f"similarity scores contain NaN in query row {row}; check the embeddings for overflow")


def _add_tie_terms(
    scores: np.ndarray, rel: np.ndarray, s: np.ndarray, flagged: np.ndarray, ranks: np.ndarray
) -> None:
    """Add #{i < j : S_i == s_j} to the ranks of flagged (tied) relevant items, in place."""
    n = scores.shape[1]
    for r in np.flatnonzero(flagged.any(axis=1)):
        ms = np.flatnonzero(flagged[r])
        js, vals, row = rel[r, ms], s[r, ms], scores[r]
        uniq = np.unique(vals)
        if len(uniq) > _MAX_TIE_VALUES:
            order = np.argsort(-row, kind="stable")
            pos = np.empty(n, dtype=np.int64)
            pos[order] = np.arange(n)
            ranks[r, ms] = pos[js] + 1
            continue
        for v in uniq:
            idx = np.flatnonzero(row == v)
            sel = vals == v
            ranks[r, ms[sel]] += np.searchsorted(idx, js[sel])


def _ranks_search(
    S: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor, sorted_buf: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU back-end: returns (ranks, item scores, sorted row values)."""
    Sn = S.numpy()
    V = sorted_buf[: S.shape[0]] if sorted_buf is not None else np.empty_like(Sn)
    sort_rows_into(Sn, V)
    nan_rows = np.flatnonzero(np.isnan(V[:, -1]))  # NaN sorts last
    if len(nan_rows):
        _raise_nan(int(nan_rows[0]))
    Vt = torch.from_numpy(V)
    s = S.gather(1, rel)
    right = torch.searchsorted(Vt, s, right=True)  # #{S_i <= s}, >= 1 since s itself is in the row
    ranks = S.shape[1] - right + 1
    prev = Vt.gather(1, (right - 2).clamp(min=0))
    flagged = valid & (right >= 2) & (prev == s)  # another item has exactly this score
    if bool(flagged.any()):
        _add_tie_terms(Sn, rel.numpy(), s.numpy(), flagged.numpy(), ranks.numpy())
    return ranks, s, Vt


def _ranks_sort(S: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generic back-end (GPU): stable argsort of -S and its inverse permutation."""
    nan = torch.isnan(S).any(dim=1)
    if bool(nan.any()):
        _raise_nan(int(nan.nonzero()[0, 0]))
    c, n = S.shape
    order = torch.argsort(-S, dim=1, stable=True)
    pos = torch.empty_like(order)
    pos.scatter_(1, order, torch.arange(n, device=S.device).expand(c, n))
    ranks = pos.gather(1, rel) + 1
    return ranks, S.gather(1, rel), torch.sort(S, dim=1).values


def relevant_ranks(
    S: torch.Tensor,
    rel: torch.Tensor,
    valid: torch.Tensor,
    n_gallery: int,
    *,
    sklearn_ties: bool = False,
    backend: str = "auto",
    sorted_buf: np.ndarray | None = None,
) -> RelevantRanks:
    """Ranks of the relevant items of a score block.

    S: (c, Ng) scores, higher is better; excluded items must already be -inf.
    rel: (c, Rmax) int64 gallery indices of the relevant items; valid: (c, Rmax) bool mask of real slots.
    sorted_buf: optional reusable (>= c, Ng) numpy buffer for the sorted values (search back-end).
    """
    if backend == "auto":
        backend = "search" if S.device.type == "cpu" else "sort"
    if backend == "search":
        ranks, s, V = _ranks_search(S.contiguous(), rel, valid, sorted_buf)
    else:
        ranks, s, V = _ranks_sort(S, rel)
    ranks = ranks.masked_fill(~valid, PAD_RANK)
    ranks, perm = torch.sort(ranks, dim=1)
    n_rel = valid.sum(dim=1)
    out = RelevantRanks(ranks=ranks, n_rel=n_rel, n_gallery=n_gallery)
    if sklearn_ties:
        ge = S.shape[1] - torch.searchsorted(V, s, right=False)  # #{S_i >= s}
        out.ge = ge.gather(1, perm)
        neg = (-s).masked_fill(~valid, float("inf")).gather(1, perm).contiguous()  # ascending per row
        out.rel_ge = torch.searchsorted(neg, neg, right=True)
    return out
