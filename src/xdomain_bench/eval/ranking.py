"""Exact stable ranks of the relevant items of a block of queries (PROTOCOLS.md §7.1).

In one query row S, the relevant item j with score s has rank

    1 + #{i : S_i > s} + #{i < j : S_i == s}

(descending score, ties by ascending gallery index). Two interchangeable back-ends:

- ``search`` (CPU): sort the *values* of each row (numpy's vectorised sort, no argsort), sort the
  relevant scores descending, and find #{S_i > s} by binary search. Only where a score is shared by
  several items is the row scanned for that value, to place the tied items by gallery index. No
  N_q×N_g argsort is ever formed.
- ``sort`` (any device, the GPU path): a stable argsort of ``-S`` per row and its inverse permutation.

Both return ranks ascending per row, i.e. the relevant items in ranking order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .functional import PAD_RANK, RelevantRanks

# Above this many distinct tied values in one row, a full stable argsort of that row is cheaper.
_MAX_TIE_VALUES = 16
_POOL: ThreadPoolExecutor | None = None


def _parallel_rows(n: int, work) -> None:
    """Run work(lo, hi) over row ranges on the thread pool (numpy releases the GIL in its kernels)."""
    global _POOL
    workers = max(1, min(torch.get_num_threads(), n))
    if workers == 1:
        work(0, n)
        return
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=workers)
    bounds = np.linspace(0, n, workers + 1).astype(int)
    futures = [_POOL.submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()


def sort_rows_into(src: np.ndarray, dst: np.ndarray) -> None:
    """dst[:] = src sorted ascending along rows."""

    def work(a: int, b: int) -> None:
        dst[a:b] = src[a:b]
        dst[a:b].sort(axis=1)

    _parallel_rows(src.shape[0], work)


def _raise_not_finite(row: int) -> None:
    raise InputError(
        f"similarity scores are not finite (NaN or inf) in query row {row}; check the embeddings for overflow"
    )


@dataclass
class _Block:
    """numpy views of one chunk for the row-wise search back-end."""

    S: np.ndarray  # (c, Ng) scores
    V: np.ndarray  # (c, Ng) each row sorted ascending
    A: np.ndarray  # (c, Rmax) relevant scores ascending, padding (+inf) last
    n_rel: np.ndarray  # (c,)
    rel: np.ndarray  # (c, Rmax) gallery indices of relevant items
    valid: np.ndarray  # (c, Rmax)
    gallery_codes: np.ndarray  # (Ng,)
    query_codes: np.ndarray  # (c,)
    ranks: np.ndarray  # (c, Rmax) out
    ge: np.ndarray | None  # (c, Rmax) out, sklearn ties only


def _rank_row(b: _Block, r: int) -> None:
    """Ranks of row r's relevant items, computed in ascending-score order and stored reversed."""
    n = int(b.n_rel[r])
    if n == 0:
        return
    a, v_row = b.A[r, :n], b.V[r]
    ng = v_row.shape[0]
    right = v_row.searchsorted(a, side="right")  # #{S_i <= s}; sorted keys take numpy's fast path
    rk = ng + 1 - right  # 1 + #{S_i > s}
    if b.ge is not None:
        b.ge[r, :n] = (ng - v_row.searchsorted(a, side="left"))[::-1]
    tied = v_row[right - 2] == a  # another item has exactly this score (right >= 1; ng == 1 is harmless)
    if tied.any():
        vals = a[tied]
        values = vals[np.r_[True, vals[1:] != vals[:-1]]]
        row = b.S[r]
        if len(values) > _MAX_TIE_VALUES:  # many tie groups: exact stable ranks of the whole row
            order = np.argsort(-row, kind="stable")
            pos = np.empty(ng, dtype=np.int64)
            pos[order] = np.arange(ng)
            b.ranks[r, :n] = np.sort(pos[b.rel[r][b.valid[r]]]) + 1
            return
        for v in values:
            idx = np.flatnonzero(row == v)  # the whole tie group, ascending gallery index
            rel_pos = np.flatnonzero(b.gallery_codes[idx] == b.query_codes[r])  # an excluded self is -inf
            p0 = int(a.searchsorted(v, side="left"))
            rk[p0 : p0 + len(rel_pos)] = rk[p0] + rel_pos[::-1]
    b.ranks[r, :n] = rk[::-1]


def _ranks_search(
    S: torch.Tensor,
    rel: torch.Tensor,
    valid: torch.Tensor,
    gallery_codes: np.ndarray,
    query_codes: np.ndarray,
    sklearn_ties: bool,
    sorted_buf: np.ndarray | None,
    n_excluded: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """CPU back-end: (ranks, ge, relevant scores in ranking order or None)."""
    Sn = S.numpy()
    c = Sn.shape[0]
    V = sorted_buf[:c] if sorted_buf is not None else np.empty_like(Sn)
    sort_rows_into(Sn, V)
    if V.shape[1] > n_excluded:  # NaN and +inf sort last; only the n_excluded self entries may be -inf
        bad = np.flatnonzero(~np.isfinite(V[:, -1]) | (V[:, n_excluded] == -np.inf))
        if len(bad):
            _raise_not_finite(int(bad[0]))
    s = S.gather(1, rel).masked_fill_(~valid, float("inf")).numpy()
    A = np.sort(s, axis=1)
    ranks = np.full(rel.shape, PAD_RANK, dtype=np.int64)
    ge = np.zeros(rel.shape, dtype=np.int64) if sklearn_ties else None
    blk = _Block(Sn, V, A, valid.sum(dim=1).numpy(), rel.numpy(), valid.numpy(), gallery_codes, query_codes, ranks, ge)

    def work(lo: int, hi: int) -> None:
        for r in range(lo, hi):
            _rank_row(blk, r)

    _parallel_rows(c, work)
    if not sklearn_ties:
        return torch.from_numpy(ranks), None, None
    ordered = -np.sort(-np.where(np.isinf(s), -np.inf, s), axis=1)  # descending, padding (-inf) last
    return torch.from_numpy(ranks), torch.from_numpy(ge), torch.from_numpy(ordered)


def _ranks_sort(
    S: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor, sklearn_ties: bool, n_excluded: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Generic back-end (GPU): stable argsort of -S and its inverse permutation."""
    bad = (~torch.isfinite(S)).sum(dim=1) != n_excluded
    if bool(bad.any()):
        _raise_not_finite(int(bad.nonzero()[0, 0]))
    c, n = S.shape
    order = torch.argsort(-S, dim=1, stable=True)
    pos = torch.empty_like(order)
    pos.scatter_(1, order, torch.arange(n, device=S.device).expand(c, n))
    ranks = (pos.gather(1, rel) + 1).masked_fill_(~valid, PAD_RANK)
    ranks, perm = torch.sort(ranks, dim=1)
    s = S.gather(1, rel).masked_fill_(~valid, float("-inf")).gather(1, perm)
    ge = None
    if sklearn_ties:
        V = torch.sort(S, dim=1).values
        ge = n - torch.searchsorted(V, s.contiguous(), right=False)  # #{S_i >= s}
    return ranks, ge, s


def relevant_ranks(
    S: torch.Tensor,
    rel: torch.Tensor,
    valid: torch.Tensor,
    n_gallery: int,
    gallery_codes: np.ndarray,
    query_codes: np.ndarray,
    *,
    sklearn_ties: bool = False,
    backend: str = "auto",
    sorted_buf: np.ndarray | None = None,
    n_excluded: int = 0,
) -> RelevantRanks:
    """Ranks of the relevant items of a score block.

    S: (c, Ng) scores, higher is better, excluded items already -inf. rel: (c, Rmax) int64 gallery
    indices of each query's relevant items in ascending order, valid: (c, Rmax) mask of real slots.
    gallery_codes (Ng,) / query_codes (c,): class codes, relevance = equal code.
    sorted_buf: optional reusable numpy buffer of at least S's shape (search back-end).
    n_excluded: -inf entries per row put there by self-exclusion (0 or 1); any other non-finite
    score raises InputError.
    """
    if backend == "auto":
        backend = "search" if S.device.type == "cpu" else "sort"
    if backend == "search":
        ranks, ge, s = _ranks_search(
            S.contiguous(), rel, valid, gallery_codes, query_codes, sklearn_ties, sorted_buf, n_excluded
        )  # fmt: skip
    else:
        ranks, ge, s = _ranks_sort(S, rel, valid, sklearn_ties, n_excluded)
    out = RelevantRanks(ranks=ranks, n_rel=valid.sum(dim=1), n_gallery=n_gallery, ge=ge)
    if sklearn_ties:
        assert s is not None
        neg = (-s).contiguous()  # ascending per row (ranking order), padding +inf last
        out.rel_ge = torch.searchsorted(neg, neg, right=True)
    return out
