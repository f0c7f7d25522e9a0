"""Model selection on the validation roles, and the embedding and metric helpers it shares with the runner's
evaluator (`runner/evaluate.py` imports them from here): methods depend on this module, never on the runner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .base import RetrievalMethod


def autocast_context(device: torch.device, precision: str | None):
    """Mixed precision for CUDA runs that ask for it; full precision otherwise."""
    if device.type == "cuda" and precision in ("bf16-mixed", "16-mixed"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16-mixed" else torch.float16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def embed_texts(method: RetrievalMethod, texts: list[str], batch_size: int = 256,
                precision: str | None = None) -> Tensor:
    was_training = method.training
    method.eval()
    try:
        parts = []
        for i in range(0, len(texts), batch_size):
            with autocast_context(method.device, precision):
                parts.append(method.embed_texts(texts[i:i + batch_size]).float().cpu())
    finally:
        method.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, method.vlm.sizes.embed_dim)


def scoring(method: RetrievalMethod) -> dict[str, str]:
    """How class retrieval scores and breaks ties: the method's similarity and the stable rule, unless the data
    (a paper profile reproducing an upstream evaluation, `DataInfo.evaluation`) names its own."""
    upstream = getattr(method.info, "evaluation", None) or {}
    return {"similarity": upstream.get("similarity", method.similarity), "tie_mode": upstream.get("tie_mode", "stable")}


def class_metrics(query: Tensor, q_labels: Tensor, gallery: Tensor, g_labels: Tensor, metrics: Iterable[str],
                  same_set: bool, similarity: str, tie_mode: str = "stable", on_chunk=None) -> dict[str, float]:
    from ..eval.engine import evaluate_class_retrieval

    return evaluate_class_retrieval(query, q_labels, gallery, g_labels, list(metrics), same_set=same_set,
                                    similarity=similarity, tie_mode=tie_mode, on_chunk=on_chunk)


def itr_metrics(images: Tensor, captions: list[list[str]], text_emb: Tensor, dedupe: bool) -> dict[str, float]:
    from ..eval.itr import evaluate_image_text

    owner = [i for i, caps in enumerate(captions) for _ in caps]
    flat = [c for caps in captions for c in caps]
    out = evaluate_image_text(images, text_emb, owner, flat, dedupe_equivalent=dedupe)
    if "i2t_R@1" in out and "t2i_R@1" in out:
        out["mean_R@1"] = 0.5 * (out["i2t_R@1"] + out["t2i_R@1"])
    return out


def selection_score(method: RetrievalMethod, store: dict[str, list]) -> float:
    """The protocol's selection metric on the validation roles gathered during validation."""
    info = method.info

    def cat(key: str) -> tuple[Tensor, Tensor, list]:
        items = store.get(key, [])
        caps = [c for _, _, cs in items if cs is not None for c in cs]
        return torch.cat([e for e, _, _ in items]), torch.cat([y for _, y, _ in items]), caps

    query, q_lab, q_caps = cat("val_query")
    if info.task == "itr":
        captions = [[c] for c in q_caps]
        text = embed_texts(method, q_caps)
        return float(itr_metrics(query, captions, text, dedupe=True).get(info.selection_metric, 0.0))
    gallery, g_lab, _ = cat("val_gallery")
    same = info.same_set and query.shape == gallery.shape and bool(torch.equal(q_lab, g_lab))
    return float(class_metrics(query, q_lab, gallery, g_lab, [info.selection_metric], same, **scoring(method))
                 [info.selection_metric])
