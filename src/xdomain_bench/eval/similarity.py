"""Query-gallery scores for the class-retrieval engine (PROTOCOLS.md §7.1, §7.4).

- ``cosine``: rows L2-normalised, float32 matmul (the default, §7.4 numerics).
- ``neg_sq_euclidean``: -‖q − g‖² on the embeddings as given (ProS / UCDR-Adapter released code).
- ``exp_neg_euclidean``: exp(-‖q − g‖) on the embeddings as given (SnMpNet's evaluation). exp
  underflows to exactly 0 beyond a distance of ~745, so large-norm features produce mass ties.

The two Euclidean scores are computed in float64: in float32, 2q·g − ‖q‖² − ‖g‖² loses about 1e-2
at ‖x‖² ≈ 6e4, and the subnormal / zero exp values must be the ones float64 gives.
The old name ``l2`` (the ``distance=`` option) is an alias of ``neg_sq_euclidean``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError, InputError
from .inputs import as_matrix, check_choice

SIMILARITIES = ("cosine", "neg_sq_euclidean", "exp_neg_euclidean")
DISTANCES = ("cosine", "l2")  # the older `distance` option; each names one similarity
ALIASES = {"l2": "neg_sq_euclidean"}

# fills `out` (c, Ng) with the scores of queries q0..q0+c-1 and returns it
ScoreBlock = Callable[[int, int, torch.Tensor], torch.Tensor]


def resolve_similarity(similarity: str | None = None, distance: str | None = None) -> str:
    """The similarity to rank by: ``similarity`` (or its alias), else ``distance``'s, else cosine."""
    if distance is not None:
        check_choice(distance, DISTANCES, "distance")
    if similarity is not None:
        check_choice(similarity, SIMILARITIES + tuple(ALIASES), "similarity")
    chosen = ALIASES.get(similarity, similarity) if similarity is not None else None
    implied = ALIASES.get(distance, distance) if distance is not None else None
    if chosen is not None and implied is not None and chosen != implied:
        raise ConfigError(
            f"distance='{distance}' means similarity '{implied}', which contradicts similarity='{similarity}'; "
            "pass only one of them"
        )
    return chosen or implied or "cosine"


def score_dtype(similarity: str) -> torch.dtype:
    return torch.float32 if similarity == "cosine" else torch.float64


def _normalise(x: torch.Tensor, what: str) -> torch.Tensor:
    norms = x.norm(dim=1)
    zero = norms == 0
    if bool(zero.any()):
        row = int(zero.nonzero()[0, 0])
        raise InputError(
            f"{what} row {row} has zero norm, so cosine similarity is undefined; drop it or use a Euclidean similarity"
        )
    return x / norms[:, None]


def matmul_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a @ b. On CPU through numpy's BLAS (OpenBLAS here needs ~1.5x less CPU time than torch's
    MKL path on AMD hosts); elsewhere torch.mm."""
    if a.device.type == "cpu" and a.dtype == b.dtype == out.dtype:
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite scores are rejected downstream
            np.matmul(a.numpy(), b.numpy(), out=out.numpy())
        return out
    return torch.mm(a, b, out=out)


def _exp_neg_sqrt(neg_d2: torch.Tensor) -> torch.Tensor:
    """In place: exp(-sqrt(-x)) of x = -‖q − g‖² ≤ 0 (numpy's float64 exp on CPU, as SnMpNet's code)."""
    if neg_d2.device.type == "cpu":
        a = neg_d2.numpy()
        np.negative(a, out=a)
        np.sqrt(a, out=a)
        np.negative(a, out=a)
        with np.errstate(under="ignore"):
            np.exp(a, out=a)
        return neg_d2
    return neg_d2.neg_().sqrt_().neg_().exp_()


def score_blocks(q: torch.Tensor, g: torch.Tensor, similarity: str) -> ScoreBlock:
    """A ScoreBlock over float query/gallery rows (same device); blocks are `score_dtype(similarity)`."""
    if similarity == "cosine":
        qn = _normalise(q.float(), "query embeddings")
        gt = _normalise(g.float(), "gallery embeddings").t()

        def cosine(q0: int, c: int, out: torch.Tensor) -> torch.Tensor:
            return matmul_into(qn[q0 : q0 + c], gt, out)

        return cosine
    q64, g64 = q.double(), g.double()
    g64t = g64.t()
    neg_g2 = -(g64 * g64).sum(dim=1)[None, :]
    q2 = (q64 * q64).sum(dim=1)
    exp = similarity == "exp_neg_euclidean"

    def euclidean(q0: int, c: int, out: torch.Tensor) -> torch.Tensor:
        matmul_into(q64[q0 : q0 + c], g64t, out)
        out.mul_(2.0).add_(neg_g2).sub_(q2[q0 : q0 + c, None]).clamp_(max=0.0)  # -‖q − g‖², float64
        return _exp_neg_sqrt(out) if exp else out

    return euclidean


def similarity_matrix(q: torch.Tensor | np.ndarray, g: torch.Tensor | np.ndarray, similarity: str) -> torch.Tensor:
    """The full (Nq, Ng) score matrix the engine ranks by, for float32 embeddings (checks, small problems)."""
    name = resolve_similarity(similarity)
    q, g = as_matrix(q, "query embeddings"), as_matrix(g, "gallery embeddings")
    out = torch.empty(q.shape[0], g.shape[0], dtype=score_dtype(name), device=q.device)
    return score_blocks(q, g, name)(0, q.shape[0], out)
