"""CLIP-Adapter (Gao et al., arXiv 2110.04544), the METHODS.md §1.6 baseline: a residual bottleneck on the
frozen post-projection image feature, f' = ratio · A(f) + (1 − ratio) · f with A(f) = ReLU(W₂ ReLU(W₁ f)),
W₁ (E/r × E) and W₂ (E × E/r) without biases. Texts stay frozen (class prompts or captions). Cacheable:
everything trained sits after the frozen encoder (H14, post-projection features)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..vlm import FrozenVLM
from .base import normalize, register_method
from .baselines import FrozenTextMixin


class ResidualAdapter(nn.Module):
    """ratio · ReLU(W₂ ReLU(W₁ f)) + (1 − ratio) · f, bias-free (the released `clip_adapter.py`)."""

    def __init__(self, dim: int, reduction: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.net = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(inplace=False),
                                 nn.Linear(hidden, dim, bias=False), nn.ReLU(inplace=False))
        self.ratio = float(ratio)

    def forward(self, f: Tensor) -> Tensor:
        return self.ratio * self.net(f) + (1.0 - self.ratio) * f


@register_method("clip_adapter")
class CLIPAdapter(FrozenTextMixin):
    cacheable = True
    cache_feature = "post_proj"  # the frozen E-dim image embedding, before normalisation
    uses_captions = True  # trains with caption InfoNCE on caption data (§1.5)

    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        self.adapter = ResidualAdapter(vlm.sizes.embed_dim, int(cfg["reduction"]), float(cfg["ratio"]))

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        f = batch["features"] if "features" in batch else self.vlm.encode_image(batch["pixels"])
        return normalize(self.adapter(f.float()))
