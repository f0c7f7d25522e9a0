"""DCAR: dual prompt learning with joint category-attribute reweighting (METHODS.md §5).

Training code is not released (Wang et al., arXiv 2508.04028; `wyf202322/DCAR`); this is the suite's
documented reconstruction. Trainable: k text context vectors per depth, J couplings Linear(T→W) that
generate the visual prompts from them (MaPLe-style, appended after the patches), and the CAA block on text
features. Caption tokens are re-weighted without gradient by how much their similarity to the paired
image differs from their similarity to a blank image (`dcar_weights`). Loss: symmetric InfoNCE plus a
category loss whose same-category negatives weigh 1 + α (`negatives`; only negatives the data provides:
attribute-swapped ones were not released and are never invented).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..vlm import FrozenVLM
from .base import RetrievalMethod, build_optimizer, register_method
from .dcar_weights import blank_image_embedding, caption_tokens, shift_weights, token_weights
from .losses import clip_infonce
from .negatives import Negative, NegativeBuilder, zero_shot_categories
from .text import DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from ..data.info import DataInfo

TEST_WEIGHTS = ("mean_image", "none")


class PromptCoupling(nn.Module):
    """Text prompts per depth, (J, k, T) ~ N(0, std), and one Linear(T→W) per depth mapping them to the
    visual prompts of that depth (shared with MaPLe-lite)."""

    def __init__(self, depth: int, n_ctx: int, text_width: int, vision_width: int, std: float = 0.02) -> None:
        super().__init__()
        if depth < 1 or n_ctx < 1:
            raise ConfigError(f"prompt depth and length must be >= 1, got depth={depth}, n_ctx={n_ctx}")
        self.depth = depth
        self.ctx = nn.Parameter(torch.randn(depth, n_ctx, text_width) * std)
        self.couplings = nn.ModuleList(nn.Linear(text_width, vision_width) for _ in range(depth))

    def text_prompts(self) -> tuple[Tensor, Tensor | None]:
        """Layer-0 context (k, T) and deep context (J-1, k, T) or None."""
        return self.ctx[0], (self.ctx[1:] if self.depth > 1 else None)

    def visual_prompts(self) -> tuple[Tensor, Tensor | None]:
        """Layer-0 visual prompts (k, W) and deep ones (J-1, k, W) or None, generated from the text prompts."""
        e = [lin(self.ctx[j]) for j, lin in enumerate(self.couplings)]
        return e[0], (torch.stack(e[1:]) if self.depth > 1 else None)


class CategoryAttributeAdapter(nn.Module):
    """CAA: t' = ratio·A(t) + (1-ratio)·t, A = Linear(E, E/r) → ReLU → Linear(E/r, E), no biases."""

    def __init__(self, dim: int, reduction: int = 4, ratio: float = 0.2) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.ratio = float(ratio)
        self.block = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(inplace=True),
                                   nn.Linear(hidden, dim, bias=False))

    def forward(self, t: Tensor) -> Tensor:
        return self.ratio * self.block(t) + (1 - self.ratio) * t


def category_loss(pos_sim: Tensor, neg_sim: Tensor, neg_mask: Tensor, omega: Tensor, scale: float) -> Tensor:
    """L_cate = -log(e^{s⁺/τ} / (e^{s⁺/τ} + Σ_n ω_n e^{s_n/τ})), τ = 1/scale, averaged over the images
    that have at least one negative. Shapes: pos_sim (B,), neg_sim / neg_mask / omega (B, N)."""
    pos = pos_sim.float() * scale
    neg = neg_sim.float() * scale + omega.float().log()
    neg = neg.masked_fill(~neg_mask, float("-inf"))
    lse = torch.logsumexp(torch.cat([pos.unsqueeze(1), neg], dim=1), dim=1)
    rows = neg_mask.any(dim=1)
    if not bool(rows.any()):
        return pos.sum() * 0.0
    return (lse - pos)[rows].mean()


def warmup_cosine_factor(step: int, *, total: int, warmup: int, warmup_ratio: float) -> float:
    """LR factor: constant `warmup_ratio` (= warmup_lr / lr) for `warmup` steps, then cosine to 0."""
    if step < warmup:
        return warmup_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@register_method("dcar")
class DCAR(RetrievalMethod):
    embedding_side = "both"  # visual prompts (image); text prompts and CAA (text)
    uses_captions = True  # optional: templated class captions without them
    cacheable = False  # visual prompts act inside the encoder

    def __init__(self, vlm: FrozenVLM, info: DataInfo, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        s = vlm.sizes
        wanted = int(cfg.get("depth", 9))
        depth = max(1, min(wanted, s.vision_layers, s.text_layers))
        self.n_ctx = int(cfg.get("n_ctx", 4))
        self.coupling = PromptCoupling(depth, self.n_ctx, s.text_width, s.vision_width, float(cfg.get("ctx_init_std", 0.02)))
        self.caa = CategoryAttributeAdapter(s.embed_dim, int(cfg.get("caa_reduction", 4)), float(cfg.get("caa_ratio", 0.2)))
        self.alpha = float(cfg.get("alpha", 0.5))
        self.lambda_cate = float(cfg.get("lambda_cate", 1.0))
        self.clamp = tuple(float(v) for v in cfg.get("weight_clamp", (0.5, 2.0)))
        self.test_weights = str(cfg.get("test_token_weights", "mean_image"))
        if self.test_weights not in TEST_WEIGHTS:
            raise ConfigError(f"test_token_weights must be one of {', '.join(TEST_WEIGHTS)}, not {self.test_weights!r}")
        self.eval_batch_size = int(cfg.get("eval_batch_size", 128))
        seed = cfg.get("seed")
        seed = int(seed) if seed is not None else torch.initial_seed() % (2**63)
        self.negatives = NegativeBuilder(info.train_class_names, mode=str(cfg.get("negatives", "released")),
                                         num_negatives=int(cfg.get("num_negatives", 4)),
                                         template=str(cfg.get("template", DEFAULT_TEMPLATE)), seed=seed)
        # f̄: running mean of the (normalised) frozen embeddings of the training images seen
        self.register_buffer("image_sum", torch.zeros(s.embed_dim))
        self.register_buffer("image_count", torch.zeros(()))
        self._blank: Tensor | None = None
        self._neg_category: dict[str, int] = {}
        self.notes.update({"depth": depth, "negatives": self.negatives.mode, "domain_labels": "ignored"})
        if depth != wanted:
            self.notes["depth_capped_from"] = wanted
        if not info.has_captions:
            self.notes["templated_captions"] = True

    # --- resume: the negatives' generator advances with training -------------------------------
    def training_state(self) -> dict[str, Any]:
        return {**super().training_state(), "negatives_rng": self.negatives.generator.get_state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        if "negatives_rng" in state:
            self.negatives.generator.set_state(state["negatives_rng"])

    # --- pieces ---------------------------------------------------------------------------------
    def blank_embedding(self) -> Tensor:
        """f^∅ (E,), computed once per backbone and device."""
        if self._blank is None or self._blank.device != self.image_sum.device:
            self._blank = blank_image_embedding(self.vlm).to(self.image_sum.device)
        return self._blank

    def mean_image_embedding(self) -> Tensor | None:
        """f̄, or None before any training image was seen."""
        if float(self.image_count) <= 0:
            return None
        return self.image_sum / self.image_count

    @torch.no_grad()
    def _track(self, frozen: Tensor) -> None:
        self.image_sum += F.normalize(frozen.float(), dim=-1).sum(dim=0).to(self.image_sum)
        self.image_count += frozen.shape[0]

    def image_embedding(self, pixels: Tensor) -> Tensor:
        """f: CLS → ln_post → proj_v with the generated visual prompts appended, L2-normalised."""
        e0, deep = self.coupling.visual_prompts()
        f = self.vlm.encode_image(pixels, prompts=e0, prompt_position="append", deep_prompts=deep)
        return F.normalize(f.float(), dim=-1)

    def encode_captions(self, texts: Sequence[str], weight_images: Tensor | None) -> Tensor:
        """t' (N, E) normalised: [SOS, v, w⊙caption, EOT] → CAA. `weight_images` ((N, E) or (E,), frozen
        image embeddings) define the token weights; None means w ≡ 1."""
        layout = caption_tokens(self.vlm, texts, self.n_ctx)
        weights = None
        if weight_images is not None:
            with torch.no_grad():
                raw = self.vlm.encode_text(layout.raw, return_tokens=True)
                w = token_weights(raw.token_features, layout.caption_mask, weight_images, self.blank_embedding(),
                                  self.clamp)
            weights = shift_weights(w, self.n_ctx)
        ctx, deep = self.coupling.text_prompts()
        t = self.vlm.encode_text(layout.prompted, context=ctx, deep_context=deep, token_weights=weights)
        return F.normalize(self.caa(t.float()), dim=-1)

    # --- evaluator hooks ------------------------------------------------------------------------
    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        return self.image_embedding(batch["pixels"])

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """At test time the paired image is unknown: weights from f̄ (or none, per the card)."""
        texts = list(texts)
        ref = self.mean_image_embedding() if self.test_weights == "mean_image" else None
        if ref is None and self.test_weights == "mean_image":
            self.notes["test_token_weights"] = "none (no training image seen)"
        parts = [self.encode_captions(texts[i:i + self.eval_batch_size], ref)
                 for i in range(0, len(texts), self.eval_batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.vlm.sizes.embed_dim, device=self.device)

    # --- training -------------------------------------------------------------------------------
    def _categories(self, negatives: Sequence[Negative]) -> list[int]:
        """Known categories, else zero-shot against the class-name features (cached per text)."""
        unknown = sorted({n.text for n in negatives if n.category is None and n.text not in self._neg_category})
        if unknown:
            cats = zero_shot_categories(self.vlm, unknown, self.class_features())
            self._neg_category.update(zip(unknown, cats))
        return [n.category if n.category is not None else self._neg_category[n.text] for n in negatives]

    def batch_texts(self, batch: dict[str, Any]) -> tuple[list[str], list[list[Negative]]]:
        """Positive captions and their negatives: the data's captions, or templated class captions."""
        labels = [int(v) for v in batch["label"].tolist()]
        if self.info.has_captions and "caption" in batch:
            captions = [str(c) for c in batch["caption"]]
            return captions, self.negatives.for_captions(captions, labels, batch.get("negatives"))
        if min(labels, default=0) < 0:
            raise ConfigError("dcar: training batch has images outside the training classes (label -1)")
        return self.negatives.templated(labels)

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        pixels = batch["pixels"]
        captions, negs = self.batch_texts(batch)
        frozen = self.vlm.frozen_image_features(pixels).float()
        self._track(frozen)
        f = self.image_embedding(pixels)
        b = f.shape[0]
        flat = [n for row in negs for n in row]
        owner = torch.tensor([i for i, row in enumerate(negs) for _ in row], dtype=torch.long, device=f.device)
        t = self.encode_captions(captions + [n.text for n in flat], torch.cat([frozen, frozen[owner]]))
        t_pos, t_neg = t[:b], t[b:]
        scale = self.logit_scale
        l_con = clip_infonce(f, t_pos, captions, scale)
        logs = {"l_con": l_con.detach()}
        if not flat or self.lambda_cate == 0:
            return l_con, logs
        width = max(len(row) for row in negs)
        col = torch.tensor([j for row in negs for j in range(len(row))], dtype=torch.long, device=f.device)
        neg_sim = torch.zeros(b, width, device=f.device)
        neg_sim = neg_sim.index_put((owner, col), (f[owner] * t_neg).sum(-1))
        mask = torch.zeros(b, width, dtype=torch.bool, device=f.device)
        mask[owner, col] = True
        cats = torch.tensor(self._categories(flat), dtype=torch.long, device=f.device)
        same = cats == batch["label"].to(f.device)[owner]
        omega = torch.ones(b, width, device=f.device)
        omega[owner, col] = 1.0 + self.alpha * same.float()
        l_cate = category_loss((f * t_pos).sum(-1), neg_sim, mask, omega, scale)
        logs.update({"l_cate": l_cate.detach(), "same_category_negatives": same.float().mean()})
        return l_con + self.lambda_cate * l_cate, logs

    def configure_optimizers(self):
        """SGD with a constant warm-up at `warmup_lr` for warmup_epochs/epochs of the steps, then cosine."""
        cfg = self.phase_config()
        if cfg.get("schedule") != "cosine" or cfg.get("warmup_lr") is None:
            return super().configure_optimizers()
        opt_cfg = dict(cfg.get("optimizer") or {})
        opt = build_optimizer([p for p in self.parameters() if p.requires_grad], opt_cfg)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = cfg.get("warmup_steps")
        if warmup is None:
            warmup = round(total * float(cfg.get("warmup_epochs", 1)) / max(1.0, float(cfg.get("epochs", 10))))
        ratio = float(cfg["warmup_lr"]) / float(opt_cfg.get("lr", 1e-3))
        factor = functools.partial(warmup_cosine_factor, total=total, warmup=int(warmup), warmup_ratio=ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
