"""A `torchmetrics.Metric` that collects embeddings and runs the retrieval engine at compute().

Each sample is passed with its global (manifest) index. Under DDP the states are gathered with
``dist_reduce_fx="cat"``; compute() keeps one row per index (DistributedSampler pads the last batch
with repeated samples) and orders rows by index, so the gallery order, hence tie-breaking, is the
manifest order and the result equals a single-process evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..errors import InputError
from .engine import TIE_MODES, evaluate_class_retrieval
from .inputs import check_choice, check_chunk_size
from .metrics import parse_metrics
from .similarity import resolve_similarity

_ROLES = ("query", "gallery")


class RetrievalMetrics(Metric):
    """Class-retrieval metrics (PROTOCOLS.md §7) over embeddings accumulated with `update`.

    ``update(embeddings, labels, indexes, is_query=True)``: labels are integer class ids, indexes the
    samples' global indices within their role. With ``same_set=True`` every sample is a query and the
    gallery at once (self excluded); pass ``is_query=True`` only. ``similarity`` / ``distance`` as in
    `engine.evaluate_class_retrieval`. compute() returns metric name → 0-dim tensor (float64 metrics;
    int64 counts).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        metrics: Sequence[str],
        *,
        same_set: bool = False,
        distance: str | None = None,
        similarity: str | None = None,
        chunk_size: int = 1024,
        tie_mode: str = "stable",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metric_names = [spec.name for spec in parse_metrics(metrics)]
        self.similarity = resolve_similarity(similarity, distance)
        check_choice(tie_mode, TIE_MODES, "tie_mode")
        self.same_set, self.tie_mode = same_set, tie_mode
        self.chunk_size = check_chunk_size(chunk_size)
        for role in _ROLES:
            self.add_state(f"{role}_emb", default=[], dist_reduce_fx="cat")
            self.add_state(f"{role}_labels", default=[], dist_reduce_fx="cat")
            self.add_state(f"{role}_index", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor, indexes: torch.Tensor, is_query: bool = True) -> None:
        """Add a batch of (embedding, class id, global sample index) rows to the query or gallery set."""
        if self.same_set and not is_query:
            raise InputError("same_set=True: every sample is both query and gallery; call update(..., is_query=True)")
        if embeddings.ndim != 2:
            raise InputError(f"embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}")
        n = embeddings.shape[0]
        for what, t in (("labels", labels), ("indexes", indexes)):
            if t.ndim != 1 or t.shape[0] != n or t.is_floating_point() or t.is_complex():
                raise InputError(f"{what} must be a 1-D integer tensor with {n} entries, got {t.dtype} {tuple(t.shape)}")
        role = "query" if is_query else "gallery"
        getattr(self, f"{role}_emb").append(embeddings.detach().to(torch.float32))
        getattr(self, f"{role}_labels").append(labels.detach().to(torch.int64))
        getattr(self, f"{role}_index").append(indexes.detach().to(torch.int64))

    def _collect(self, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of one role, one per global index, in index order."""
        state = getattr(self, f"{role}_emb")
        if isinstance(state, list) and not state:
            raise InputError(f"no {role} embeddings were passed to update(); nothing to evaluate")
        emb = dim_zero_cat(state)
        labels = dim_zero_cat(getattr(self, f"{role}_labels"))
        index = dim_zero_cat(getattr(self, f"{role}_index"))
        index, order = torch.sort(index, stable=True)
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        labels = labels[order]
        first = torch.cumsum(keep, 0) - 1  # row of the kept copy for every row
        if not torch.equal(labels, labels[keep][first]):
            raise InputError(f"{role} sample indexes repeat with different labels; indexes must identify samples")
        return emb[order][keep], labels[keep]

    def compute(self) -> dict[str, torch.Tensor]:
        query, query_labels = self._collect("query")
        gallery, gallery_labels = (query, query_labels) if self.same_set else self._collect("gallery")
        result = evaluate_class_retrieval(
            query, query_labels.cpu(), gallery, gallery_labels.cpu(), self.metric_names,
            same_set=self.same_set, similarity=self.similarity, chunk_size=self.chunk_size, tie_mode=self.tie_mode,
        )  # fmt: skip
        return {
            name: torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float64)
            for name, value in result.items()
        }
