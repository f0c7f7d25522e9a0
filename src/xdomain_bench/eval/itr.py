"""Image-text retrieval R@K and RSUM (PROTOCOLS.md §7.2, protocol `itr` §6.6).

i2t: each image queries all captions; hit if a relevant caption is in the top K.
t2i: each caption queries all images; hit if a relevant image is in the top K.
Relevance, ``dedupe_equivalent=True`` (`clean`): captions are equivalent when equal after
``" ".join(s.split())``; every caption equivalent to one of an image's captions is relevant to it.
``dedupe_equivalent=False`` (`paper`): instance level, a caption is relevant to its own image only.
Ranking is by cosine similarity with ties broken by ascending gallery index (§7.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .engine import exact_matmul
from .inputs import as_matrix, check_chunk_size


def _normalise_rows(x: torch.Tensor, what: str) -> torch.Tensor:
    norms = x.norm(dim=1)
    if bool((norms == 0).any()):
        raise InputError(f"{what} row {int((norms == 0).nonzero()[0, 0])} has zero norm; cosine is undefined")
    return x / norms[:, None]


def relevant_pairs(text_owner: np.ndarray, texts: Sequence[str] | None, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
    """All relevant (image, text) pairs, sorted by image then text."""
    if dedupe:
        assert texts is not None
        ids: dict[str, int] = {}
        eq = np.array([ids.setdefault(" ".join(t.split()), len(ids)) for t in texts], dtype=np.int64)
    else:
        eq = np.arange(len(text_owner), dtype=np.int64)
    owned = np.unique(np.stack([text_owner, eq], axis=1), axis=0)  # (image, caption class) pairs
    order = np.argsort(eq, kind="stable")
    counts = np.bincount(eq, minlength=int(eq.max()) + 1 if len(eq) else 0)
    starts = np.cumsum(counts) - counts
    reps = counts[owned[:, 1]]
    images = np.repeat(owned[:, 0], reps)
    offsets = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    text_idx = order[np.repeat(starts[owned[:, 1]], reps) + offsets]
    pairs = np.unique(np.stack([images, text_idx], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def first_relevant_rank(S: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1-based stable rank of the best-ranked relevant item per row; 0 where a row has none."""
    n = S.shape[1]
    best = S.masked_fill(~mask, float("-inf")).max(dim=1).values
    idx = torch.arange(n, device=S.device)
    at_best = mask & (S == best[:, None])
    jstar = torch.where(at_best, idx, n).min(dim=1).values  # lowest index among tied relevant
    above = (S > best[:, None]).sum(dim=1) + ((S == best[:, None]) & (idx < jstar[:, None])).sum(dim=1)
    return torch.where(mask.any(dim=1), above + 1, torch.zeros_like(above))


def _recall_at(
    queries: torch.Tensor, gallery: torch.Tensor, rows: np.ndarray, cols: np.ndarray, ks: Sequence[int], chunk: int
) -> dict[int, float]:
    """Mean hit rate at each K; (rows, cols) are the relevant pairs, sorted by row."""
    hits = {k: 0 for k in ks}
    gt = gallery.t()
    for q0 in range(0, queries.shape[0], chunk):
        c = min(chunk, queries.shape[0] - q0)
        S = queries[q0 : q0 + c] @ gt
        lo, hi = np.searchsorted(rows, [q0, q0 + c])
        mask = torch.zeros(c, gallery.shape[0], dtype=torch.bool, device=S.device)
        mask[torch.from_numpy(rows[lo:hi] - q0), torch.from_numpy(cols[lo:hi])] = True
        rank = first_relevant_rank(S, mask)
        for k in ks:
            hits[k] += int(((rank >= 1) & (rank <= k)).sum())
    return {k: hits[k] / queries.shape[0] for k in ks}


def evaluate_image_text(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    text_owner: Sequence[int],
    texts: Sequence[str] | None = None,
    *,
    dedupe_equivalent: bool = True,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """i2t_R@K and t2i_R@K (×100) for each K in ``ks``, their sum ``RSUM``, ``n_images`` and ``n_texts``.

    ``text_owner[t]`` is the image index of caption t. ``texts`` (the caption strings) are needed
    for ``dedupe_equivalent=True``; pass ``dedupe_equivalent=False`` for instance-level relevance.
    """
    check_chunk_size(chunk_size)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise InputError(f"ks must be positive integers, got {list(ks)}")
    img = as_matrix(image_emb, "image embeddings")
    txt = as_matrix(text_emb, "text embeddings").to(img.device)
    if img.shape[1] != txt.shape[1]:
        raise InputError(f"image dim {img.shape[1]} != text dim {txt.shape[1]}; use one joint embedding space")
    owner = np.asarray(text_owner.cpu() if isinstance(text_owner, torch.Tensor) else text_owner)
    if owner.ndim != 1 or len(owner) != txt.shape[0] or (len(owner) and owner.dtype.kind not in "iu"):
        raise InputError(f"text_owner must be {txt.shape[0]} integer image indices (one per text row)")
    if len(owner) and (owner.min() < 0 or owner.max() >= img.shape[0]):
        raise InputError(f"text_owner holds image indices outside 0..{img.shape[0] - 1}")
    if dedupe_equivalent:
        if texts is None:
            raise InputError("dedupe_equivalent=True needs the caption strings: pass texts=..., or dedupe_equivalent=False")
        if len(texts) != txt.shape[0] or not all(isinstance(t, str) for t in texts):
            raise InputError(f"texts must be {txt.shape[0]} strings, one per text row")
    img, txt = _normalise_rows(img, "image embeddings"), _normalise_rows(txt, "text embeddings")
    pi, pt = relevant_pairs(owner.astype(np.int64), texts, dedupe_equivalent)
    by_text = np.lexsort((pi, pt))
    with exact_matmul(img.device):
        i2t = _recall_at(img, txt, pi, pt, ks, chunk_size)
        t2i = _recall_at(txt, img, pt[by_text], pi[by_text], ks, chunk_size)
    out = {f"i2t_R@{k}": 100.0 * i2t[k] for k in ks}
    out.update({f"t2i_R@{k}": 100.0 * t2i[k] for k in ks})
    out["RSUM"] = float(sum(out.values()))
    out.update(n_images=img.shape[0], n_texts=txt.shape[0])
    return out
