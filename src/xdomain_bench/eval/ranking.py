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


def _raise_nan(row: int) -> None:
    raise InputError(f"similarity scores contain NaN in query row {row}; check the embeddings for overflow")


@dataclass
class _Block:
    """numpy views of one chunk for the row-wise search back-end."""

    S: np.ndarray  # (c, Ng) scores
    V: np.ndarray  # (c, Ng) each row sorted ascending
    D: np.ndarray  # (c, Rmax) relevant scores, descending, padding (-inf) last
    n_rel: np.ndarray  # (c,)
    rel: np.ndarray  # (c, Rmax) gallery indices of relevant items
    valid: np.ndarray  # (c, Rmax)
    is_rel_code: np.ndarray  # (Ng,) gallery class codes
    query_code: np.ndarray  # (c,)
    ranks: np.ndarray  # (c, Rmax) out
    ge: np.ndarray | None  # (c, Rmax) out, sklearn ties only


def _rank_row(b: _Block, r: int) -> None:
    n = int(b.n_rel[r])
    if n == 0:
        return
    d, v_row = b.D[r, :n], b.V[r]
    ng = v_row.shape[0]
    right = np.searchsorted(v_row, d[::-1], side="right")[::-1]  # ascending keys: fast path
    base = ng - right  # #{S_i > s}
    ranks = b.ranks[r, :n]
    ranks[:] = base + 1
    if b.ge is not None:
        b.ge[r, :n] = ng - np.searchsorted(v_row, d[::-1], side="left")[::-1]
    tied = (right >= 2) & (v_row[np.maximum(right - 2, 0)] == d)  # another item has exactly this score
    if not tied.any():
        return
    values = np.unique(d[tied])
    row = b.S[r]
    if len(values) > _MAX_TIE_VALUES:  # many tie groups: exact stable ranks of the whole row
        order = np.argsort(-row, kind="stable")
        pos = np.empty(ng, dtype=np.int64)
        pos[order] = np.arange(ng)
        ranks[:] = np.sort(pos[b.rel[r][b.valid[r]]]) + 1
        return
    neg_d = -d
    for v in values:
        idx = np.flatnonzero(row == v)  # the whole tie group, ascending gallery index
        rel_pos = np.flatnonzero(b.is_rel_code[idx] == b.query_code[r])  # excluded self is -inf, never here
        p0 = int(np.searchsorted(neg_d, -v, side="left"))
        ranks[p0 : p0 + len(rel_pos)] = base[p0] + 1 + rel_pos


def _ranks_search(
    S: torch.Tensor,
    rel: torch.Tensor,
    valid: torch.Tensor,
    gallery_codes: np.ndarray,
    query_codes: np.ndarray,
    sklearn_ties: bool,
    sorted_buf: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """CPU back-end: (ranks, ge, relevant scores in ranking order)."""
    Sn = S.numpy()
    c = Sn.shape[0]
    V = sorted_buf[:c] if sorted_buf is not None else np.empty_like(Sn)
    sort_rows_into(Sn, V)
    nan_rows = np.flatnonzero(np.isnan(V[:, -1]))  # NaN sorts last
    if len(nan_rows):
        _raise_nan(int(nan_rows[0]))
    s = S.gather(1, rel).masked_fill_(~valid, float("-inf")).numpy()
    D = -np.sort(-s, axis=1)  # descending, padding (-inf) last
    ranks = np.full(rel.shape, PAD_RANK, dtype=np.int64)
    ge = np.zeros(rel.shape, dtype=np.int64) if sklearn_ties else None
    blk = _Block(Sn, V, D, valid.sum(dim=1).numpy(), rel.numpy(), valid.numpy(), gallery_codes, query_codes, ranks, ge)

    def work(lo: int, hi: int) -> None:
        for r in range(lo, hi):
            _rank_row(blk, r)

    _parallel_rows(c, work)
    return torch.from_numpy(ranks), None if ge is None else torch.from_numpy(ge), torch.from_numpy(D)


def _ranks_sort(
    S: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor, sklearn_ties: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Generic back-end (GPU): stable argsort of -S and its inverse permutation."""
    nan = torch.isnan(S).any(dim=1)
    if bool(nan.any()):
        _raise_nan(int(nan.nonzero()[0, 0]))
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
) -> RelevantRanks:
    """Ranks of the relevant items of a score block.

    S: (c, Ng) scores, higher is better, excluded items already -inf. rel: (c, Rmax) int64 gallery
    indices of each query's relevant items in ascending order, valid: (c, Rmax) mask of real slots.
    gallery_codes (Ng,) / query_codes (c,): class codes, relevance = equal code.
    sorted_buf: optional reusable numpy buffer of at least S's shape (search back-end).
    """
    if backend == "auto":
        backend = "search" if S.device.type == "cpu" else "sort"
    if backend == "search":
        ranks, ge, s = _ranks_search(
            S.contiguous(), rel, valid, gallery_codes, query_codes, sklearn_ties, sorted_buf
        )  # fmt: skip
    else:
        ranks, ge, s = _ranks_sort(S, rel, valid, sklearn_ties)
    out = RelevantRanks(ranks=ranks, n_rel=valid.sum(dim=1), n_gallery=n_gallery, ge=ge)
    if sklearn_ties:
        neg = (-s).contiguous()  # ascending per row (ranking order), padding +inf last
        out.rel_ge = torch.searchsorted(neg, neg, right=True)
    return out
