"""Prompt-learning and probing baselines (METHODS.md §1.6): linear probe, CoOp, VPT-shallow.

Each trains a copy of `proj_v` (H13) plus its own prompts; objectives are the §1.5 defaults (class CE at
τ_clip against class text features, or symmetric caption InfoNCE on caption data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..vlm import FrozenVLM
from .base import RetrievalMethod, normalize, register_method
from .losses import class_cross_entropy, clip_infonce
from .prompting import ContextText, parse_readout, vpt_uniform
from .text import DEFAULT_TEMPLATE, frozen_class_features


class FrozenTextMixin(RetrievalMethod):
    """Frozen class-prompt features with the card's `template` (METHODS §1.4)."""

    embedding_side = "image"  # the text encoder and its prompts stay frozen

    def templates(self) -> tuple[str, ...]:
        return (str(self.cfg.get("template", DEFAULT_TEMPLATE)),)

    def class_features(self) -> Tensor:
        if self._class_feats is None or self._class_feats.device != self.device:
            feats = frozen_class_features(self.vlm, self.info.train_class_names, self.templates())
            self._class_feats = feats.to(self.device)
        return self._class_feats


class ProjectionCopy(FrozenTextMixin):
    """A trainable copy of `proj_v` on pre-proj frozen CLS features (cacheable, H14)."""

    cacheable = True
    cache_feature = "pre_proj"

    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        self.proj_v = nn.Parameter(vlm.backbone_tensor("proj_v"))

    def pre_proj_features(self, batch: dict[str, Any]) -> Tensor:
        if "features" in batch:  # cached pre-proj CLS features
            return batch["features"]
        return self.vlm.frozen_image_features(batch["pixels"], pre_proj=True)

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        feats = self.pre_proj_features(batch)
        return normalize(feats.to(self.proj_v.dtype) @ self.proj_v)


@register_method("linear_probe")
class LinearProbe(ProjectionCopy):
    """Trains only `proj_v` (W×E) against frozen text features (class prompts or captions)."""


@register_method("coop")
class CoOp(ProjectionCopy):
    """16 shared context vectors "X … X {class}." (H6) + `proj_v` (+ optional `proj_t`) copies."""

    uses_captions = True
    embedding_side = "both"  # a proj_v copy and the text context

    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        self.text = ContextText(
            vlm.sizes.text_width,
            int(cfg["n_ctx"]),
            cfg["class_template"],
            cfg["caption_template"],
            std=float(cfg["ctx_std"]),
        )
        self.proj_t = (
            nn.Parameter(vlm.backbone_tensor("proj_t")) if cfg.get("train_text_projection") else None
        )

    def class_text_features(self) -> Tensor:
        return self.text.encode_classes(self.vlm, self.info.train_class_names, self.proj_t)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Captions with the learned context in front."""
        return self.text.encode_captions(self.vlm, texts, self.proj_t)

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        img = self.embed_images(batch)
        if self.info.task == "itr":
            captions = batch["caption"]
            return clip_infonce(img, self.embed_texts(captions), captions, self.logit_scale), {}
        return class_cross_entropy(img, self.class_text_features(), batch["label"], self.logit_scale), {}


@register_method("vpt")
class VPTShallow(FrozenTextMixin):
    """n shallow visual prompt tokens after CLS (H3, VPT init) + a `proj_v` copy; text frozen."""

    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        n = int(cfg["n_tokens"])
        if n < 1:
            raise ConfigError(f"vpt needs n_tokens >= 1, not {n}")
        self.prompts = nn.Parameter(vpt_uniform(n, vlm.sizes))
        self.proj_v = nn.Parameter(vlm.backbone_tensor("proj_v"))
        self.readout = parse_readout(cfg["readout"])

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        z = self.vlm.encode_image(
            batch["pixels"], prompts=self.prompts, readout=self.readout, proj_v=self.proj_v
        )
        return normalize(z)
