"""Objectives shared by several methods (METHODS.md §1.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def class_cross_entropy(image_emb: Tensor, class_feats: Tensor, labels: Tensor, scale: float) -> Tensor:
    """CE(cos(f, T_C) * scale, y); image and text features are normalised here."""
    logits = F.normalize(image_emb.float(), dim=-1) @ F.normalize(class_feats.float(), dim=-1).t() * scale
    return F.cross_entropy(logits, labels)


def caption_targets(captions: Sequence[str], device: torch.device) -> Tensor:
    """Uniform soft targets over in-batch captions that are identical strings (after whitespace folding)."""
    keys = [" ".join(c.split()) for c in captions]
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32, device=device)
    return same / same.sum(dim=1, keepdim=True)


def clip_infonce(image_emb: Tensor, text_emb: Tensor, captions: Sequence[str], scale: float) -> Tensor:
    """Symmetric in-batch image-caption InfoNCE; identical captions are positives of each other."""
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    logits = img @ txt.t() * scale
    targets = caption_targets(captions, img.device)
    loss_i = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_t = -(targets * logits.t().log_softmax(dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)
