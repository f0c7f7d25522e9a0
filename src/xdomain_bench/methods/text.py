"""Class-name prompts and frozen text features (METHODS.md §1.4)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from ..vlm import FrozenVLM

DEFAULT_TEMPLATE = "a photo of a {}."


def clean_class_name(name: str) -> str:
    """Strip numeric prefixes such as `001.` (CUB) and a dataset prefix `ds/` (lower-case identifier);
    underscores become spaces. Slashes inside names (FGVC `F/A-18`, `F-16A/B`) are kept."""
    name = re.sub(r"^[a-z0-9_]+/", "", name)
    name = re.sub(r"^\d+\.", "", name)
    return name.replace("_", " ")


@torch.no_grad()
def frozen_class_features(vlm: FrozenVLM, class_names: Sequence[str], templates: Sequence[str] = (DEFAULT_TEMPLATE,),
                          batch_size: int = 256) -> Tensor:
    """Normalised frozen text features per class (mean over templates, re-normalised)."""
    device = next(vlm.parameters()).device
    feats = torch.zeros(len(class_names), vlm.sizes.embed_dim, device=device)
    for template in templates:
        texts = [template.format(clean_class_name(c)) for c in class_names]
        parts = [vlm.encode_text(texts[i:i + batch_size]).float() for i in range(0, len(texts), batch_size)]
        feats += torch.nn.functional.normalize(torch.cat(parts), dim=-1)
    return torch.nn.functional.normalize(feats, dim=-1)


@torch.no_grad()
def frozen_text_features(vlm: FrozenVLM, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """Frozen features of raw texts (captions), not normalised."""
    parts = [vlm.encode_text(list(texts[i:i + batch_size])).float() for i in range(0, len(texts), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, vlm.sizes.embed_dim)
