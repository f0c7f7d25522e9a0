"""UCDR-Adapter (Jiang, Cheng et al., WACV 2025, arXiv 2412.10680; code `fine68/UCDR2024`), METHODS.md §2.

Phase 1 learns a domain prompt bank U (K×W), a class prompt bank V (C×W) and a textual context ("TST",
`"a photo of {class} from X×m domain."`) with ground-truth prompts [CLS, U[d], V[y], patches], token-1
readout, ITC at τ=0.07 and a triplet loss against per-class queues of a momentum branch. Phase 2 trains
the Target Prompt Generator (TPG) that builds both prompts from a frozen query feature g and the banks
(the sample's own rows zeroed, `paper` variant), plus trainable copies of `cls_emb` and `proj_v`.
Inference is the phase-2 path on the unmasked banks.

Also here: the released pipeline's train-time input quirks (ImageNet normalisation + ColorJitter) and the
per-epoch exponential learning-rate rule, both shared with ProS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..vlm import FrozenVLM
from .base import RetrievalMethod, build_optimizer, normalize, register_method
from .momentum import ClassQueues, EMACopy
from .prompting import (
    ContextText,
    TextFeatureCache,
    clsless_readout,
    encode_prompted,
    parse_readout,
    vpt_uniform,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def card_value(cfg: dict[str, Any], key: str, method: str) -> Any:
    if key not in cfg:
        raise ConfigError(
            f"method '{method}' needs '{key}' in its config; it belongs in methods/{method}.yaml"
        )
    return cfg[key]


# --- released-code train-time inputs (METHODS §2.8) -------------------------------------------------------
def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _gray(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _gray(x)).clamp(0, 1)


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by `shift` (fraction of a turn) through HSV."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    sector = torch.floor(h * 6.0)
    frac = h * 6.0 - sector
    sector = sector.long() % 6
    v = maxc
    p, q, t = v * (1 - sat), v * (1 - sat * frac), v * (1 - sat * (1 - frac))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]  # (r, g, b) per sector
    out = [torch.stack([row[c] for row in table]).gather(0, sector.unsqueeze(0)).squeeze(0) for c in range(3)]
    return torch.stack(out, dim=1)


def color_jitter(x: Tensor, strengths: Sequence[float], generator: torch.Generator | None = None) -> Tensor:
    """ColorJitter(brightness, contrast, saturation, hue) on (B, 3, H, W) images in [0, 1]: per image, factors
    b, c, s ~ U[max(0, 1-k), 1+k], hue ~ U[-k, k], applied in a random order (torchvision's semantics)."""
    bri, con, sat, hue = (float(v) for v in strengths)
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).to(x.device, x.dtype)

    ops = [
        (_brightness, bri, uniform(max(0.0, 1 - bri), 1 + bri)),
        (_contrast, con, uniform(max(0.0, 1 - con), 1 + con)),
        (_saturation, sat, uniform(max(0.0, 1 - sat), 1 + sat)),
        (_hue, hue, uniform(-hue, hue)),
    ]
    order = torch.stack([torch.randperm(4, generator=generator) for _ in range(n)]).to(x.device)
    x = x.clone()
    for slot in range(4):
        for k, (fn, strength, factor) in enumerate(ops):
            idx = (order[:, slot] == k).nonzero().squeeze(1)
            if strength > 0 and idx.numel():
                x[idx] = fn(x[idx], factor[idx])
    return x


def released_train_pixels(
    pixels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    normalization: str,
    jitter: Sequence[float] | None,
) -> Tensor:
    """Re-express a batch normalised with the backbone's (mean, std) as the release trains on it: optional
    ColorJitter on the [0, 1] image, then ImageNet (`imagenet`) or the backbone's (`backbone`) mean/std."""
    if normalization not in ("backbone", "imagenet"):
        raise ConfigError(f"train_normalization must be 'backbone' or 'imagenet', not {normalization!r}")
    if normalization == "backbone" and not jitter:
        return pixels
    m0 = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    s0 = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    x = pixels * s0 + m0
    if jitter:
        x = color_jitter(x.clamp(0, 1), jitter)
    m1, s1 = (
        (m0, s0)
        if normalization == "backbone"
        else (
            torch.tensor(IMAGENET_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1),
        )
    )
    return (x - m1) / s1


# --- per-epoch exponential learning rate (UCDR-Adapter / ProS phase 2) --------------------------------------
def _epoch_length(method: RetrievalMethod) -> float:
    trainer = getattr(method, "_trainer", None)
    n = getattr(trainer, "num_training_batches", None) if trainer is not None else None
    if n is None or n == float("inf") or n <= 0:
        return float("inf")  # unknown epoch length: stay in epoch 0
    return float(n)


def exp_epoch_optimizers(method: RetrievalMethod) -> dict[str, Any] | None:
    """`schedule: exp_epoch`: lr_e = max(lr·decay^(e/epochs), min_lr), e the 0-based epoch of the phase."""
    cfg = method.phase_config()
    if cfg.get("schedule") != "exp_epoch":
        return None
    opt_cfg = dict(cfg.get("optimizer") or {})
    opt = build_optimizer([p for p in method.parameters() if p.requires_grad], opt_cfg)
    base = float(opt_cfg.get("lr", 1e-3))
    decay, span = float(cfg.get("lr_decay_base", 1e-3)), float(cfg.get("lr_decay_epochs", 20))
    floor = float(cfg.get("min_lr", 0.0))

    def factor(step: int) -> float:
        epoch = step // _epoch_length(method)
        return max(base * decay ** (epoch / span), floor) / base

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# --- Target Prompt Generation ------------------------------------------------------------------------------
class TargetPromptGenerator(nn.Module):
    """q = W_img g; K = W_prm(B); a = softmax_n(K q / τ_g); p = Σ a_n K_n; p ← p + LN(P_proj p); p / r."""

    def __init__(self, width: int, tau: float, ratio: float) -> None:
        super().__init__()
        self.w_img = nn.Linear(width, width)
        self.w_prm = nn.Linear(width, width)
        self.p_proj = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        self.tau, self.ratio = float(tau), float(ratio)

    def forward(self, g: Tensor, bank: Tensor, mask_rows: Tensor | None = None) -> Tensor:
        """g (B, W), bank (N, W); `mask_rows` (B,) zeroes row mask_rows[i] of sample i's bank (−1: none)."""
        b, n = g.shape[0], bank.shape[0]
        rows = bank.unsqueeze(0).expand(b, -1, -1)
        if mask_rows is not None:
            hit = torch.arange(n, device=bank.device).unsqueeze(0) == mask_rows.to(bank.device).unsqueeze(1)
            rows = rows.masked_fill(hit.unsqueeze(-1), 0.0)
        q = self.w_img(g.to(self.w_img.weight.dtype))
        keys = self.w_prm(rows)
        attn = torch.softmax(torch.einsum("bnw,bw->bn", keys, q).float() / self.tau, dim=1)
        p = torch.einsum("bn,bnw->bw", attn.to(keys.dtype), keys)
        p = p + self.ln(self.p_proj(p))
        return p / self.ratio


def queue_triplet_loss(f: Tensor, labels: Tensor, queues: ClassQueues, margin: float, n: int) -> Tensor:
    """mean over anchors with both pools non-empty of mean_r max(0, ‖f−p_r‖ − ‖f−n_r‖ + margin) (§2.4)."""
    pos, neg, ok = queues.sample(labels, n)
    if not bool(ok.any()):
        return f.sum() * 0.0
    anchor = f[ok].unsqueeze(1)
    d_pos = (anchor - pos[ok].to(f.dtype)).norm(dim=-1)
    d_neg = (anchor - neg[ok].to(f.dtype)).norm(dim=-1)
    return F.relu(d_pos - d_neg + margin).mean()


# --- the method --------------------------------------------------------------------------------------------
class BankPromptMethod(RetrievalMethod):
    """Shared by UCDR-Adapter and ProS: prompt banks, TST text, trainable `cls_emb` / `proj_v` copies,
    domain / class ids with the K = 1 fallback, the released-code input quirks."""

    uses_domains = True
    embedding_side = "image"  # retrieval reads the prompted image branch; texts are the frozen ones

    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        sizes = vlm.sizes
        self.num_domains = max(1, len(info.train_domains))
        self.num_classes = info.num_train_classes
        if self.num_classes < 1:
            raise ConfigError(f"{self.name} needs training classes; {info.dataset}/{info.protocol} has none")
        self.domain_bank = nn.Parameter(vpt_uniform(self.num_domains, sizes))
        self.class_bank = nn.Parameter(vpt_uniform(self.num_classes, sizes))
        self.text = ContextText(
            sizes.text_width,
            int(self.opt("n_ctx")),
            self.opt("text_template"),
            std=float(self.opt("ctx_std")),
        )
        self.cls_emb = nn.Parameter(vlm.backbone_tensor("cls_emb"))
        self.proj_v = nn.Parameter(vlm.backbone_tensor("proj_v"))
        self.readout = parse_readout(self.opt("readout"))
        self.temperature = float(self.opt("temperature"))
        self.similarity = str(self.opt("similarity"))
        if self.similarity not in ("cosine", "l2"):
            raise ConfigError(f"similarity must be 'cosine' or 'l2', not {self.similarity!r}")
        self._tst = TextFeatureCache()
        self.notes.update(
            method_variant=cfg.get("variant"),
            single_domain=self.num_domains == 1,
            num_domains=self.num_domains,
            num_classes=self.num_classes,  # C: the training classes (train + val with merge_val_classes)
            merge_val_classes=bool(self.opt("merge_val_classes")),
        )
        if self.num_domains == 1:
            self.notes["domain_bank"] = "one domain: a single learned token, never masked in phase 2"
        if info.task == "itr":
            self.notes["itr_training"] = (
                "trained with class labels only; captions via the frozen text encoder"
            )

    def opt(self, key: str) -> Any:
        return card_value(self.cfg, key, self.name)

    @classmethod
    def data_requests(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """`merge_val_classes: true` asks for the val classes in training (DomainNet; C = train + val)."""
        return {"merge_val_classes": True} if card_value(cfg, "merge_val_classes", cls.name) else {}

    phase_names = ("phase1", "phase2")

    def set_phase(self, phase: str) -> None:
        super().set_phase(phase)
        self._tst.clear()

    # --- inputs ----------------------------------------------------------------------------------------
    def domain_ids(self, batch: dict[str, Any]) -> Tensor:
        labels = batch["label"]
        if self.num_domains == 1 or "domain_id" not in batch:
            return torch.zeros_like(labels)
        ids = batch["domain_id"]
        if bool((ids < 0).any()):
            raise ConfigError(f"{self.name}: training batch has samples outside the training domains")
        return ids

    def train_pixels(self, pixels: Tensor) -> Tensor:
        pre = self.vlm.preprocess
        return released_train_pixels(
            pixels, pre.mean, pre.std, str(self.opt("train_normalization")), self.cfg.get("color_jitter")
        )

    def finish(self, z: Tensor) -> Tensor:
        """Embeddings for search: raw for `l2` ranking (released code), normalised for cosine."""
        return z.float() if self.similarity == "l2" else normalize(z)

    # --- text --------------------------------------------------------------------------------------------
    def text_projection(self) -> Tensor | None:
        return None

    def class_text_features(self, grad: bool) -> Tensor:
        """Normalised TST features of the training classes (recomputed with grad, else cached)."""
        names = self.info.train_class_names

        def compute() -> Tensor:
            return normalize(self.text.encode_classes(self.vlm, names, self.text_projection()))

        if grad:
            return compute()
        deps = [self.text.ctx] + ([self.text_projection()] if self.text_projection() is not None else [])
        return self._tst.get(deps, compute)

    def itc_loss(self, z: Tensor, labels: Tensor, grad_text: bool) -> Tensor:
        logits = normalize(z) @ self.class_text_features(grad_text).t() / self.temperature
        return F.cross_entropy(logits, labels)

    def configure_optimizers(self):
        return exp_epoch_optimizers(self) or super().configure_optimizers()


@register_method("ucdr_adapter")
class UCDRAdapter(BankPromptMethod):
    def __init__(self, vlm: FrozenVLM, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        sizes = vlm.sizes
        self.tpg = TargetPromptGenerator(
            sizes.vision_width, float(self.opt("tau_g")), float(self.opt("prompt_ratio"))
        )
        self.momentum_branch = EMACopy(
            {"domain_bank": self.domain_bank, "class_bank": self.class_bank},
            momentum=float(self.opt("momentum")),
            init=str(self.opt("momentum_init")),
            init_fn=lambda t: vpt_uniform(t.shape[0], sizes),
        )
        self.queues = ClassQueues(self.num_classes, int(self.opt("queue_length")), sizes.embed_dim)
        self.query_feature_kind = str(self.opt("query_feature"))
        if self.query_feature_kind not in ("cls", "top_left_patch"):
            raise ConfigError(
                f"query_feature must be 'cls' or 'top_left_patch', not {self.query_feature_kind!r}"
            )
        self.mask_gt_rows = bool(self.opt("mask_gt_rows"))
        if cfg.get("variant") == "released_code":
            self.notes["released_code"] = {
                "phase2_mask": "no-op (as released)",
                "query_feature": "ln_post of the top-left patch, CLS-less pass",
                "momentum_init": "independent random draw",
                "ranking": "Euclidean on raw embeddings",
                "train_inputs": "ImageNet mean/std + ColorJitter(0.4,0.4,0.4,0.4) applied in-method to the "
                "loader's batch (after its crop/flip); eval keeps the backbone's mean/std",
                "not_reproduced": "selection on the test split; jitter on PIL uint8 images (ours: floats)",
            }

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"domain_bank": [self.domain_bank], "class_bank": [self.class_bank], "text_context": [self.text.ctx],
                "tpg": list(self.tpg.parameters()), "cls_emb": [self.cls_emb], "proj_v": [self.proj_v]}

    # --- image paths ---------------------------------------------------------------------------------------
    def _encode(self, pixels: Tensor, prompts: Tensor, training: bool) -> Tensor:
        return encode_prompted(
            self.vlm,
            pixels,
            prompts,
            readout=self.readout,
            proj_v=self.proj_v,
            cls_emb=self.cls_emb,
            dropout=float(self.opt("token_dropout")),
            dropout_scope=str(self.opt("token_dropout_scope")),
            training=training,
        )

    def gt_prompts(self, domain_bank: Tensor, class_bank: Tensor, domains: Tensor, labels: Tensor) -> Tensor:
        return torch.stack([domain_bank[domains], class_bank[labels]], dim=1)

    @torch.no_grad()
    def query_feature(self, pixels: Tensor) -> Tensor:
        """g (B, W) from a frozen second pass (H11): ln_post(CLS) (`paper`) or the top-left patch."""
        if self.query_feature_kind == "cls":
            return self.vlm.frozen_image_features(pixels, pre_proj=True).float()
        return clsless_readout(self.vlm, pixels, 0).float()

    def generate_prompts(
        self, pixels: Tensor, domains: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """(B, 2, W) generated prompts [p_d, p_c]; given ids mask the sample's own bank rows."""
        g = self.query_feature(pixels)
        dom_mask = domains if self.num_domains > 1 else None
        p_d = self.tpg(g, self.domain_bank, dom_mask)
        p_c = self.tpg(g, self.class_bank, labels)
        return torch.stack([p_d, p_c], dim=1)

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        pixels = batch["pixels"]
        return self.finish(self._encode(pixels, self.generate_prompts(pixels), training=False))

    # --- training -------------------------------------------------------------------------------------------
    def loss_weights(self) -> dict[str, float]:
        """This phase's loss terms and weights (`phases.<phase>.losses`)."""
        return card_value(self.phase_config(), "losses", self.name)

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        pixels = self.train_pixels(batch["pixels"])
        labels, domains = batch["label"], self.domain_ids(batch)
        if self.phase == "phase1":
            return self._phase1_loss(pixels, domains, labels)
        masked = self.mask_gt_rows
        prompts = self.generate_prompts(pixels, domains if masked else None, labels if masked else None)
        z = self._encode(pixels, prompts, training=False)  # token dropout is a phase-1 option only
        itc = self.itc_loss(z, labels, grad_text=False)
        return float(self.loss_weights()["itc"]) * itc, {"itc": itc.detach()}

    def _phase1_loss(
        self, pixels: Tensor, domains: Tensor, labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        self.momentum_branch.update({"domain_bank": self.domain_bank, "class_bank": self.class_bank})
        z = self._encode(
            pixels, self.gt_prompts(self.domain_bank, self.class_bank, domains, labels), self.training
        )
        with torch.no_grad():
            zm = self._encode(
                pixels,
                self.gt_prompts(
                    self.momentum_branch["domain_bank"], self.momentum_branch["class_bank"], domains, labels
                ),
                self.training,
            )
            self.queues.push(normalize(zm), labels)
        weights = self.loss_weights()
        itc = self.itc_loss(z, labels, grad_text=True)
        tri = queue_triplet_loss(
            normalize(z),
            labels,
            self.queues,
            float(self.opt("triplet_margin")),
            int(self.opt("triplet_samples")),
        )
        loss = float(weights["itc"]) * itc + float(weights["triplet"]) * tri
        return loss, {"itc": itc.detach(), "triplet": tri.detach()}
