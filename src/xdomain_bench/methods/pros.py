"""ProS (Fang et al., CVPR 2024, arXiv 2312.12478; code `fangkaipeng/ProS`), METHODS.md §1.6.

Stage 1 learns domain units DP (K×W) and class units SP (C×W) with ground-truth prompts
[CLS, DP[d], SP[y], patches] (token dropout during training, token-1 readout), the TST text template and a
trainable `proj_t` copy. Stage 2 trains a new, randomly initialised 2-layer ViT ("simulator") that reads
[PT_d, PT_c, DP and SP with the sample's own rows zeroed, its own patch tokens] and emits the two prompts
from positions 0 and 1 (its own ln_post and W×W projection); the frozen ViT then runs [CLS, P_d, P_c,
patches]. Loss in both stages: CE(f·T_Cᵀ / 0.07, y). Nothing is masked at test time. Captions (FDRD) go
through the frozen text tower and the trained `proj_t`, the projection the image side was trained against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from ..vlm import FrozenVLM, VLMSizes
from ..vlm.towers import run_layers
from .base import register_method
from .prompting import encode_prompted
from .ucdr_adapter import BankPromptMethod


class PromptSimulator(nn.Module):
    """A small ViT of width W (W/64 heads, at least 1) with its own patch and positional embeddings."""

    def __init__(self, sizes: VLMSizes, layers: int = 2, n_out: int = 2) -> None:
        super().__init__()
        width, patch = sizes.vision_width, sizes.patch_size
        heads = max(1, width // 64)
        while width % heads:
            heads -= 1
        scale = width**-0.5
        self.n_out = n_out
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.position_embedding = nn.Parameter(scale * torch.randn(sizes.num_patches, width))
        self.ln_pre = nn.LayerNorm(width)
        config = CLIPVisionConfig(
            hidden_size=width,
            intermediate_size=4 * width,
            num_attention_heads=heads,
            num_hidden_layers=layers,
            hidden_act="quick_gelu",
            attention_dropout=0.0,
        )
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, width))

    def forward(self, pixels: Tensor, prefix: Tensor) -> Tensor:
        """prefix (B, n, W) = [templates, units]; returns (B, n_out, W) prompts from positions 0..n_out-1."""
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        x = x + self.position_embedding.unsqueeze(0)
        x = torch.cat([prefix.to(x.dtype), x], dim=1)
        x, _ = run_layers(self.layers, self.ln_pre(x))
        return self.ln_post(x[:, : self.n_out]) @ self.proj


@register_method("pros")
class ProS(BankPromptMethod):
    embedding_side = "both"  # the prompted image branch, and captions through the trained proj_t

    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        sizes = vlm.sizes
        self.proj_t = nn.Parameter(vlm.backbone_tensor("proj_t"))
        self.simulator = PromptSimulator(sizes, int(self.opt("simulator_layers")))
        self.templates = nn.Parameter(sizes.vision_width**-0.5 * torch.randn(2, sizes.vision_width))
        self.notes["simulator_patch_size"] = (
            sizes.patch_size
        )  # the release fixes 32; ours follows the backbone
        if cfg.get("variant") == "released_code":
            self.notes["released_code"] = {
                "ranking": "Euclidean on raw embeddings",
                "train_inputs": "ImageNet mean/std + ColorJitter(0.4,0.4,0.4,0.4) applied in-method to the "
                "loader's batch; eval keeps the backbone's mean/std",
                "not_reproduced": "selection on the test split; simulator patch size 32; jitter on PIL uint8",
            }
        if info.task == "itr":
            self.notes["itr_training"] = ("trained with class labels only; captions via the frozen text tower "
                                          "and the trained proj_t")

    phase_names = ("stage1", "stage2")

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"domain_units": [self.domain_bank], "class_units": [self.class_bank], "text_context": [self.text.ctx],
                "proj_t": [self.proj_t], "simulator": list(self.simulator.parameters()), "templates": [self.templates],
                "proj_v": [self.proj_v], "cls_emb": [self.cls_emb]}

    def text_projection(self) -> Tensor:
        return self.proj_t

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Captions through the frozen text tower and the trained `proj_t` (not normalised)."""
        return self.vlm.encode_text(list(texts), proj_t=self.proj_t).float()

    def _encode(self, pixels: Tensor, prompts: Tensor, dropout: float) -> Tensor:
        return encode_prompted(
            self.vlm,
            pixels,
            prompts,
            readout=self.readout,
            proj_v=self.proj_v,
            cls_emb=self.cls_emb,
            dropout=dropout,
            dropout_scope=str(self.opt("token_dropout_scope")),
            training=self.training,
        )

    def generate_prompts(
        self, pixels: Tensor, domains: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """(B, 2, W) simulator prompts; given ids zero the sample's own DP / SP rows (K = 1: never masked)."""
        b = pixels.shape[0]
        dp = self.domain_bank.unsqueeze(0).expand(b, -1, -1)
        sp = self.class_bank.unsqueeze(0).expand(b, -1, -1)
        if domains is not None and self.num_domains > 1:
            dp = dp.masked_fill(_row_mask(domains, self.num_domains).unsqueeze(-1), 0.0)
        if labels is not None:
            sp = sp.masked_fill(_row_mask(labels, self.num_classes).unsqueeze(-1), 0.0)
        prefix = torch.cat([self.templates.unsqueeze(0).expand(b, -1, -1), dp, sp], dim=1)
        return self.simulator(pixels, prefix)

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        pixels = batch["pixels"]
        return self.finish(self._encode(pixels, self.generate_prompts(pixels), dropout=0.0))

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        pixels = self.train_pixels(batch["pixels"])
        labels, domains = batch["label"], self.domain_ids(batch)
        if self.phase == "stage1":
            prompts = torch.stack([self.domain_bank[domains], self.class_bank[labels]], dim=1)
            z = self._encode(pixels, prompts, dropout=float(self.opt("token_dropout")))
        else:
            z = self._encode(pixels, self.generate_prompts(pixels, domains, labels), dropout=0.0)
        loss = self.itc_loss(z, labels, grad_text=True)
        return loss, {"itc": loss.detach()}


def _row_mask(ids: Tensor, rows: int) -> Tensor:
    """(B, rows) bool, True at each sample's own row (ids < 0 mark nothing)."""
    return torch.arange(rows, device=ids.device).unsqueeze(0) == ids.unsqueeze(1)
