"""The class-retrieval metric engine: every requested metric in one chunked pass over the queries.

Per chunk of queries: a score block (`similarity.score_blocks`: float32 cosine, float64 Euclidean
scores), the exact stable ranks of the relevant items (`ranking.relevant_ranks`), and float64
per-query values (summed with math.fsum, so results do not depend on the chunk size). Peak extra
memory is about ``2 × chunk_size × N_g × itemsize`` bytes (score block + its sorted copy) plus the gallery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from ..errors import InputError
from .functional import RelevantRanks, per_query_values
from .inputs import as_labels, as_matrix, check_choice, check_chunk_size, encode_labels
from .metrics import MetricSpec, parse_metrics
from .ranking import relevant_ranks
from .similarity import (
    DISTANCES,
    SIMILARITIES,
    ScoreBlock,
    matmul_into,
    resolve_similarity,
    score_blocks,
    score_dtype,
)

TIE_MODES = ("stable", "sklearn")
CUTOFF_KINDS = ("prec", "map_k", "hit", "recall")  # metrics with a fixed cut-off k
__all__ = ["DISTANCES", "SIMILARITIES", "TIE_MODES", "evaluate_class_retrieval", "evaluate_scores", "matmul_into"]


def no_hit_key(k: int) -> str:
    """Result key of the number of queries with H(k) = 0 (no relevant item in the top k)."""
    return f"n_queries_no_hit@{k}"


class ClassBlocks:
    """Gallery indices grouped by class, to list each query's relevant items without a scan."""

    def __init__(self, gallery_codes: np.ndarray, n_codes: int) -> None:
        self.order = torch.from_numpy(np.argsort(gallery_codes, kind="stable").astype(np.int64))
        counts = np.bincount(gallery_codes, minlength=n_codes).astype(np.int64)
        self.counts = torch.from_numpy(counts)
        self.starts = torch.from_numpy(np.cumsum(counts) - counts)

    def relevant(self, query_codes: torch.Tensor, self_index: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(rel, valid): padded (c, Rmax) gallery indices of each query's class, self removed."""
        cnt = self.counts[query_codes]
        rmax = int(cnt.max()) if len(cnt) else 0
        slot = torch.arange(rmax, dtype=torch.int64)
        valid = slot[None, :] < cnt[:, None]
        pos = (self.starts[query_codes][:, None] + slot[None, :]).clamp(max=max(len(self.order) - 1, 0))
        rel = self.order[pos] if len(self.order) else torch.zeros_like(pos)
        if self_index is not None:
            valid &= rel != self_index[:, None]
        return rel.contiguous(), valid


@contextmanager
def exact_matmul(device: torch.device):
    """TF32 off on CUDA for the duration (PROTOCOLS.md §7.4)."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def run_chunks(
    score_block: ScoreBlock,
    n_query: int,
    n_gallery: int,
    query_codes: np.ndarray,
    gallery_codes: np.ndarray,
    n_codes: int,
    specs: Sequence[MetricSpec],
    *,
    same_set: bool,
    chunk_size: int,
    tie_mode: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    on_chunk: Callable[[int, torch.Tensor, RelevantRanks], None] | None = None,
) -> dict[str, float]:
    """Drive the chunk loop and average every metric over all queries (exact float64 sums). `on_chunk(q0, S, rr)`
    sees each chunk's scores (self excluded) and relevant ranks, e.g. to keep per-query results (eval/per_query)."""
    blocks = ClassBlocks(gallery_codes, n_codes)
    qcodes = torch.from_numpy(query_codes)
    n_cand = n_gallery - 1 if same_set else n_gallery
    cs = min(chunk_size, n_query)
    buf = torch.empty(cs, n_gallery, dtype=dtype, device=device)
    sorted_buf = np.empty((cs, n_gallery), dtype=buf.numpy().dtype) if device.type == "cpu" else None
    values = {spec.name: np.zeros(n_query, dtype=np.float64) for spec in specs}
    n_empty = 0
    cutoffs = sorted({spec.k for spec in specs if spec.kind in CUTOFF_KINDS and spec.k is not None})
    no_hit = dict.fromkeys(cutoffs, 0)
    sklearn = tie_mode == "sklearn" and any(spec.is_ap for spec in specs)
    for q0 in range(0, n_query, cs):
        c = min(cs, n_query - q0)
        S = score_block(q0, c, buf[:c])
        self_index = torch.arange(q0, q0 + c) if same_set else None
        if self_index is not None:
            S[torch.arange(c, device=device), self_index.to(device)] = float("-inf")
        rel, valid = blocks.relevant(qcodes[q0 : q0 + c], self_index)
        rr = relevant_ranks(
            S, rel.to(device), valid.to(device), n_cand, gallery_codes, query_codes[q0 : q0 + c],
            sklearn_ties=sklearn, backend=backend, sorted_buf=sorted_buf, n_excluded=int(same_set),
        )  # fmt: skip
        for spec in specs:
            values[spec.name][q0 : q0 + c] = per_query_values(spec, rr, tie_mode).cpu().numpy()
        if on_chunk is not None:
            on_chunk(q0, S, rr)
        n_empty += int((rr.n_rel == 0).sum())
        for k in cutoffs:
            no_hit[k] += int((rr.hits(k) == 0).sum())
    # correctly rounded float64 sums: the result does not depend on the chunk size
    out: dict[str, float] = {name: math.fsum(v.tolist()) / n_query for name, v in values.items()}
    out.update(n_queries=n_query, n_gallery=n_gallery, n_queries_no_relevant=n_empty)
    out.update({no_hit_key(k): n for k, n in no_hit.items()})
    return out


def _check_options(metrics: Sequence[str] | str, chunk_size: int, tie_mode: str) -> list[MetricSpec]:
    specs = parse_metrics(metrics)
    check_chunk_size(chunk_size)
    check_choice(tie_mode, TIE_MODES, "tie_mode")
    return specs


def evaluate_class_retrieval(
    query: torch.Tensor | np.ndarray,
    query_labels: Sequence | np.ndarray | torch.Tensor,
    gallery: torch.Tensor | np.ndarray,
    gallery_labels: Sequence | np.ndarray | torch.Tensor,
    metrics: Sequence[str],
    *,
    same_set: bool = False,
    distance: str | None = None,
    similarity: str | None = None,
    chunk_size: int = 1024,
    tie_mode: str = "stable",
    on_chunk: Callable[[int, torch.Tensor, RelevantRanks], None] | None = None,
) -> dict[str, float]:
    """Class-retrieval metrics of PROTOCOLS.md §7 for query/gallery embeddings.

    Relevance = equal label (integers or strings). With ``same_set=True`` query i *is* gallery row i
    (pass the same array twice) and is excluded by index. ``similarity``: "cosine" (default),
    "neg_sq_euclidean" or "exp_neg_euclidean" (module `similarity`); ``distance`` is the older name
    ("cosine" or "l2" = neg_sq_euclidean), and the two must agree when both are given. Ties fall by
    ascending gallery index; ``tie_mode="sklearn"`` makes AP tie-aware as in scikit-learn (§7.1).
    Returns metric name → mean over all queries, plus ``n_queries``, ``n_gallery`` (rows given),
    ``n_queries_no_relevant`` (R = 0) and, per cut-off k of the @k metrics, ``n_queries_no_hit@k``
    (H(k) = 0 under the stable ranking). ``on_chunk``: see `run_chunks`.
    """
    specs = _check_options(metrics, chunk_size, tie_mode)
    name = resolve_similarity(similarity, distance)
    q = as_matrix(query, "query embeddings")
    g = as_matrix(gallery, "gallery embeddings").to(q.device)
    if q.shape[1] != g.shape[1]:
        raise InputError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}; embed both with the same model")
    ql = as_labels(query_labels, q.shape[0], "query labels")
    gl = as_labels(gallery_labels, g.shape[0], "gallery labels")
    if same_set:
        _check_same_set(q, g, ql, gl)
    block = score_blocks(q, g, name)
    qcodes, gcodes, n_codes = encode_labels(ql, gl)
    with exact_matmul(q.device):
        return run_chunks(
            block, q.shape[0], g.shape[0], qcodes, gcodes, n_codes, specs, same_set=same_set,
            chunk_size=chunk_size, tie_mode=tie_mode, device=q.device, dtype=score_dtype(name), on_chunk=on_chunk,
        )  # fmt: skip


def evaluate_scores(
    scores: torch.Tensor | np.ndarray,
    query_labels: Sequence | np.ndarray | torch.Tensor,
    gallery_labels: Sequence | np.ndarray | torch.Tensor,
    metrics: Sequence[str],
    *,
    same_set: bool = False,
    chunk_size: int = 1024,
    tie_mode: str = "stable",
    backend: str = "auto",
) -> dict[str, float]:
    """The engine's ranking/metric path on a precomputed (Nq, Ng) score matrix (higher = better).

    Scores keep their float dtype (float32 or float64), so the exact same numbers can be fed to
    another implementation. ``same_set=True`` excludes entry (i, i).
    """
    specs = _check_options(metrics, chunk_size, tie_mode)
    check_choice(backend, ("auto", "search", "sort"), "backend")
    S = scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(scores))
    if S.ndim != 2 or S.shape[0] == 0 or S.shape[1] == 0:
        raise InputError(f"scores must be a non-empty 2-D (queries, gallery) matrix, got shape {tuple(S.shape)}")
    if not S.is_floating_point():
        S = S.to(torch.float64)
    bad = ~torch.isfinite(S)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0, 0])
        raise InputError(f"scores contain NaN or inf in query row {row}; pass finite similarity scores")
    ql = as_labels(query_labels, S.shape[0], "query labels")
    gl = as_labels(gallery_labels, S.shape[1], "gallery labels")
    if same_set and S.shape[0] != S.shape[1]:
        raise InputError(f"same_set needs a square score matrix, got {tuple(S.shape)}")
    qcodes, gcodes, n_codes = encode_labels(ql, gl)

    def block(q0: int, c: int, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(S[q0 : q0 + c])

    return run_chunks(
        block, S.shape[0], S.shape[1], qcodes, gcodes, n_codes, specs,
        same_set=same_set, chunk_size=chunk_size, tie_mode=tie_mode, device=S.device, dtype=S.dtype,
        backend=backend,
    )  # fmt: skip


def _check_same_set(q: torch.Tensor, g: torch.Tensor, ql: np.ndarray, gl: np.ndarray) -> None:
    if q.shape != g.shape or not np.array_equal(ql, gl) or not torch.equal(q, g):
        raise InputError(
            "same_set=True means query row i is gallery row i: pass the same embeddings and labels as "
            "query and gallery (or use same_set=False for separate sets)"
        )
