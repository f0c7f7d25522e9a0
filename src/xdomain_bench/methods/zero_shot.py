"""Zero-shot CLIP: the frozen encoders, no training (METHODS.md §1.6)."""

from __future__ import annotations

from .base import RetrievalMethod, register_method


@register_method("zero_shot")
class ZeroShot(RetrievalMethod):
    cacheable = True
    trainable = False
    embedding_side = "none"
