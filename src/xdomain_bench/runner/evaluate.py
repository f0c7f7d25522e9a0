"""The evaluator: embed query and gallery (no gradient, each sample once), exact search, metrics.

The helpers that validation inside a method needs as well (`embed_texts`, `class_metrics`, `itr_metrics`,
`selection_score`) live in `methods/selection.py`, so that methods never import the runner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..errors import XBenchError
from ..eval.distributed import embed_sharded, gather_rows, world
from ..methods.selection import (
    autocast_context,
    class_metrics,
    embed_texts,
    itr_metrics,
    scoring,
    selection_score,
)

if TYPE_CHECKING:
    from ..data.datamodule import RetrievalDataModule
    from ..methods.base import RetrievalMethod


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def embed_batches(method: RetrievalMethod, batches: Iterable[dict[str, Any]], expected: int,
                  what: str, precision: str | None = None) -> tuple[Tensor, Tensor]:
    """Image embeddings and global class ids, in loader (= manifest) order; counts checked."""
    was_training = method.training
    method.eval()
    device = method.device
    embs, labels = [], []
    try:
        for batch in batches:
            batch = _to_device(batch, device)
            with autocast_context(device, precision):
                embs.append(method.embed_images(batch).float().cpu())
            labels.append(batch["class_id"].cpu())
    finally:
        method.train(was_training)
    emb = torch.cat(embs) if embs else torch.zeros(0, method.vlm.sizes.embed_dim)
    lab = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if emb.shape[0] != expected:
        raise XBenchError(f"embedded {emb.shape[0]} {what} samples but the manifest has {expected}; "
                          "the evaluation path must see every sample exactly once")
    return emb, lab


def itr_per_source(images: Tensor, captions: list[list[str]], text_emb: Tensor, groups: list[str],
                   dedupe: bool) -> dict[str, float]:
    """Image-text metrics per source dataset (`<source>/<metric>`) and their unweighted mean (PROTOCOLS §6.6)."""
    starts = [0]
    for caps in captions:
        starts.append(starts[-1] + len(caps))
    out: dict[str, float] = {}
    per: list[dict[str, float]] = []
    for source in sorted(set(groups)):
        rows = [i for i, g in enumerate(groups) if g == source]
        t_idx = [j for i in rows for j in range(starts[i], starts[i + 1])]
        m = itr_metrics(images[rows], [captions[i] for i in rows], text_emb[t_idx], dedupe)
        per.append(m)
        out.update({f"{source}/{k}": v for k, v in m.items()})
    for key in per[0] if per else []:
        if not key.startswith("n_"):  # counts are not metrics
            out[key] = float(sum(m[key] for m in per) / len(per))
    return {k: v for k, v in out.items() if not k.rsplit("/", 1)[-1].startswith("n_")}


def evaluate_test(method: RetrievalMethod, dm: RetrievalDataModule, precision: str | None = None,
                  loaders: Any = None, on_chunk: Any = None) -> dict[str, Any]:
    """Metrics on the protocol's test roles, plus counts. `loaders` (anything with `eval_dataloader(role)`,
    e.g. the H14 `CachedFeatureData` of `dm`) serves the images in place of `dm`'s pixel loaders. `on_chunk`
    (e.g. eval/per_query.PerQuery) sees the class-retrieval engine's chunks."""
    info = dm.info
    source = loaders if loaders is not None else dm
    query_rows = dm.role_frame("query")
    rank, size = world()  # under DDP each rank embeds its share of every role, gathered; rank 0 scores
    ranks: dict[str, list[int]] = {}
    query, q_lab, ranks["query"] = embed_sharded(_embed(method, "query", precision), source.eval_dataloader("query"),
                                                 len(query_rows), "query")
    if info.task == "itr":
        captions = dm.caption_lists("query")
        flat = [c for caps in captions for c in caps]
        text, ranks["captions"] = gather_rows(embed_texts(method, flat[rank::size], precision=precision),
                                              len(flat), "caption")
        if rank != 0:
            return _worker_result(ranks)
        groups = [rel.split("/", 1)[0] for rel in query_rows["relpath"]]
        metrics = itr_per_source(query, captions, text, groups, dedupe=info.variant == "clean")
        by_source = {s: {"n_query": groups.count(s),
                         "n_gallery": sum(len(c) for c, g in zip(captions, groups) if g == s)}
                     for s in sorted(set(groups))}
        return {"metrics": metrics, "counts": {"n_query": len(query_rows), "n_gallery": len(flat),
                                               "sources": sorted(set(groups)), "by_source": by_source},
                **_distributed(ranks)}
    gallery_rows = dm.role_frame("gallery")
    if info.same_set and list(gallery_rows["relpath"]) == list(query_rows["relpath"]):
        gallery, g_lab = query, q_lab  # same-set protocol: embed once, exclude self by index
    else:
        gallery, g_lab, ranks["gallery"] = embed_sharded(_embed(method, "gallery", precision),
                                                         source.eval_dataloader("gallery"), len(gallery_rows), "gallery")
    if rank != 0:
        return _worker_result(ranks)
    metrics = class_metrics(query, q_lab, gallery, g_lab, info.metrics, info.same_set, **scoring(method),
                            on_chunk=on_chunk)
    counts = {"n_query": len(query_rows), "n_gallery": len(gallery_rows),
              "n_queries_no_relevant": int(metrics.pop("n_queries_no_relevant", _no_relevant(q_lab, g_lab, info.same_set)))}
    for key in ("n_queries", "n_gallery"):
        metrics.pop(key, None)
    # queries with no relevant item in the top k, per cut-off: counts, never scores to average
    counts.update({key: int(metrics.pop(key)) for key in [k for k in metrics if k.startswith("n_queries_no_hit@")]})
    return {"metrics": metrics, "counts": counts, **_distributed(ranks)}


def _embed(method: RetrievalMethod, what: str, precision: str | None):
    return lambda loader, expected: embed_batches(method, loader, expected, what, precision)


def _distributed(ranks: dict[str, list[int]]) -> dict[str, Any]:
    """Under DDP: the world size and how many samples of each role every rank embedded."""
    size = world()[1]
    return {"distributed": {"world_size": size, "per_rank": ranks}} if size > 1 else {}


def _worker_result(ranks: dict[str, list[int]]) -> dict[str, Any]:
    return {"metrics": {}, "counts": {}, **_distributed(ranks)}


def _no_relevant(q_lab: Tensor, g_lab: Tensor, same_set: bool) -> int:
    g = np.asarray(g_lab)
    counts = {c: int((g == c).sum()) for c in np.unique(g)}
    return int(sum(1 for c in np.asarray(q_lab) if counts.get(c, 0) - (1 if same_set else 0) <= 0))


__all__ = ["class_metrics", "embed_batches", "embed_texts", "evaluate_test", "itr_metrics", "itr_per_source",
           "selection_score"]
