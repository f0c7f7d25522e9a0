"""DVA: Dual-Vision Adaptation for fine-grained retrieval (METHODS.md §3; arXiv 2506.16273).

Trainable: ICA bottleneck adapters in parallel to Q and K of every vision block (H9) and C×E class
proxies initialised from the frozen class-prompt features. Training builds three views per image (the
loader's x, an object crop x_obj cut from the full-resolution image when the batch carries it, and the
background-masked x_bg on the tensor), runs them in one batched pass
(3B images), and minimises λ_x·L_proxy(x) + λ_obj·L_proxy(x_obj) + λ_bg·L_proxy(x_bg) + λ_kd·L_kd
(+ λ_con·L_con). Inference: the plain view through the adapted encoder, no boxes; texts: frozen tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.cub import read_box_file
from ..errors import ConfigError
from .adapters import adapter_stack
from .attention_boxes import AttentionBoxCache
from .base import RetrievalMethod, register_method
from .dva_views import (
    ViewAugment,
    augment_views,
    background_view,
    image_boxes_from_tensor,
    object_view,
    original_object_views,
    parse_aspect,
    tensor_boxes_from_image,
)
from .text import DEFAULT_TEMPLATE, frozen_class_features

BOX_SOURCES = ("auto", "annotation", "attention", "file")


def proxy_logits(feats: Tensor, proxies: Tensor, tau: float) -> Tensor:
    """cos(f, P) / τ_p."""
    return F.normalize(feats.float(), dim=-1) @ F.normalize(proxies.float(), dim=-1).t() / tau


def proxy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """CE over the proxies; rows with label -1 are ignored (zero when no row has a label)."""
    valid = labels >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid], labels[valid])


def distillation_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ)), batch mean; the teacher is detached."""
    log_s = F.log_softmax(student.float() / tau, dim=-1)
    log_t = F.log_softmax(teacher.detach().float() / tau, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau**2


def pairwise_loss(feats: Tensor, labels: Tensor, beta: float = 0.5) -> Tensor:
    """DVF's contrastive term: (1/B²) Σ_i [Σ_{y_j=y_i} (1 − s_ij) + Σ_{y_j≠y_i} max(s_ij − β, 0)]."""
    f = F.normalize(feats.float(), dim=-1)
    s = f @ f.t()
    same = labels[:, None] == labels[None, :]
    terms = torch.where(same, 1 - s, (s - beta).clamp_min(0.0))
    return terms.sum() / labels.shape[0] ** 2


@register_method("dva")
class DVA(RetrievalMethod):
    uses_boxes = True
    original_images = True  # training batches carry the decoded images: x_obj is cut at full resolution
    embedding_side = "image"  # ICA adapters in the image encoder; texts are the frozen ones

    def __init__(self, vlm, info, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        s = vlm.sizes
        rank = int(self.cfg.get("adapter_rank", 16))
        scale = float(self.cfg.get("adapter_scale", 1.0))
        self.q_adapters = adapter_stack(s.vision_width, rank, s.vision_layers, scale)
        self.k_adapters = adapter_stack(s.vision_width, rank, s.vision_layers, scale)
        if info.num_train_classes < 1:
            raise ConfigError(f"dva needs class labels for its proxies; {info.dataset}/{info.protocol} has no "
                              "training classes")
        templates = list(self.cfg.get("templates") or [DEFAULT_TEMPLATE])
        init = frozen_class_features(vlm, info.train_class_names, templates).float()
        if bool(self.cfg.get("freeze_proxies", False)):
            self.register_buffer("proxies", init.clone())
        else:
            self.proxies = nn.Parameter(init.clone())
        self.box_source = str(self.cfg.get("box_source", "auto"))
        if self.box_source not in BOX_SOURCES:
            raise ConfigError(f"unknown box_source '{self.box_source}'; use one of {', '.join(BOX_SOURCES)}")
        self.box_file = self.cfg.get("box_file")
        if self.box_file is not None and self.box_source != "file":
            raise ConfigError(f"box_file is set but box_source is {self.box_source}; set box_source: file")
        if self.box_source in ("annotation", "file") and not info.has_boxes and self.box_file is None:
            raise ConfigError(f"box_source: {self.box_source}, but {info.dataset} ships no boxes "
                              "(no bounding_boxes.txt); use auto or attention, or give box_file")
        self.file_boxes = read_box_file(self.box_file) if self.box_file is not None else None
        self.box_cache = AttentionBoxCache(str(self.cfg.get("attention_box_cache", "none")),
                                           float(self.cfg.get("attention_box_share", 0.6)),
                                           float(self.cfg.get("box_enlarge", 1.1)))
        self.obj_aspect = parse_aspect(self.cfg.get("obj_aspect", "1:1"))
        self.view_augment = ViewAugment.from_config(self.cfg.get("view_augment"))
        self.tau_p = float(self.cfg.get("tau_proxy", 0.1))
        self.tau_kd = float(self.cfg.get("tau_kd", 1.0))
        lam = {"x": 1.0, "obj": 1.0, "bg": 1.0, "kd": 1.0, "con": 0.0}
        lam.update({k: float(v) for k, v in (self.cfg.get("lambdas") or {}).items()})
        unknown = set(lam) - {"x", "obj", "bg", "kd", "con"}
        if unknown:
            raise ConfigError(f"unknown DVA lambdas {sorted(unknown)}; known: x, obj, bg, kd, con")
        self.lambdas = lam
        self.beta = float(self.cfg.get("con_margin", 0.5))
        self.notes.update(self.parameter_shares())
        self.notes.update(box_source=self.box_source, boxes_annotation=0, boxes_attention=0, object_view="none")
        if not info.single_domain:
            self.notes["domain_labels"] = "ignored"

    # --- resume: cached attention boxes and their counts -----------------------------------------
    def training_state(self) -> dict[str, Any]:
        counts = {k: self.notes[k] for k in ("boxes_annotation", "boxes_attention", "attention_box_cache")
                  if k in self.notes}
        return {**super().training_state(), "boxes": self.box_cache.dump(), "box_counts": counts}

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        if "boxes" in state:
            self.box_cache.restore(state["boxes"])
            self.notes.update(state["box_counts"])

    # --- parameter accounting ---------------------------------------------------------------------
    def parameter_shares(self) -> dict[str, float | int]:
        """Trainable fraction against all backbone parameters and against the vision tower."""
        clip = self.vlm.clip
        vision = sum(p.numel() for p in self.vlm.vision.parameters())
        vision += sum(p.numel() for p in clip.visual_projection.parameters())
        backbone = sum(p.numel() for p in self.vlm.parameters())
        adapters = sum(p.numel() for p in [*self.q_adapters.parameters(), *self.k_adapters.parameters()])
        trainable = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("vlm."))
        return {"trainable_params": trainable, "adapter_params": adapters, "backbone_params": backbone,
                "vision_tower_params": vision,
                "trainable_fraction": trainable / (trainable + backbone),
                "trainable_fraction_vision": trainable / vision,
                "adapter_fraction_vision": adapters / vision}

    # --- encoders ---------------------------------------------------------------------------------
    def encode(self, pixels: Tensor) -> Tensor:
        """ICA-adapted image embedding (E, not normalised): CLS -> ln_post -> frozen proj_v."""
        return self.vlm.encode_image(pixels, q_adapters=self.q_adapters, k_adapters=self.k_adapters)

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        return F.normalize(self.encode(batch["pixels"]).float(), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        return F.normalize(super().embed_texts(texts).float(), dim=-1)

    # --- boxes and views --------------------------------------------------------------------------
    def _given_boxes(self, batch: dict[str, Any]) -> tuple[Tensor | None, Tensor | None]:
        """The rows' own boxes: (normalised xyxy of the tensor, pixel xyxy of the image or None), from the
        user's box_file by `image_id` or else from the batch (the dataset's bounding_boxes.txt)."""
        if self.box_source == "attention":
            return None, None
        if self.file_boxes is not None:
            ids = batch.get("image_id")
            if ids is None or "window" not in batch or bool((ids < 0).all()):
                raise ConfigError(f"box_file needs batches with image ids and images; {self.info.dataset} "
                                  "manifests have no image_id (CUB's do)")
            nan = [float("nan")] * 4
            px = torch.tensor([self.file_boxes.get(int(i), nan) for i in ids.tolist()], dtype=torch.float32)
            return tensor_boxes_from_image(px, batch["window"]), px
        return batch.get("box"), batch.get("image_box")

    @torch.no_grad()
    def object_boxes(self, batch: dict[str, Any]) -> Tensor:
        """Normalised xyxy (B, 4) of the pixel tensor: the rows' own boxes where present (see
        `_given_boxes`), attention boxes of the frozen model for the other rows."""
        pixels = batch["pixels"]
        b = pixels.shape[0]
        given, _ = self._given_boxes(batch)
        boxes = torch.full((b, 4), float("nan"), device=pixels.device)
        if given is not None:
            given = given.to(pixels.device, torch.float32)
            ok = torch.isfinite(given).all(dim=1) & (given[:, 2] > given[:, 0]) & (given[:, 3] > given[:, 1])
            boxes[ok] = given[ok]
        need = ~torch.isfinite(boxes).all(dim=1)
        self.notes["boxes_annotation"] += int(b - need.sum())
        if bool(need.any()):
            rows = need.nonzero().flatten()
            index = batch.get("index")
            idx = index.to(rows.device)[rows].tolist() if isinstance(index, Tensor) else None
            boxes[rows] = self.box_cache.boxes(self.vlm, pixels[rows], idx, role="train")
            self.notes["boxes_attention"] += int(rows.numel())
            self.notes["attention_box_cache"] = self.box_cache.state()
        return boxes

    def image_boxes(self, batch: dict[str, Any], boxes: Tensor) -> Tensor:
        """Pixel xyxy (B, 4) in the decoded images for the tensor boxes `object_boxes` chose: a row's own
        pixel box as given, an attention box mapped back through the loader's crop window and flip."""
        sizes = torch.tensor([im.size for im in batch["image"]], dtype=torch.float32)
        out = image_boxes_from_tensor(boxes.cpu(), batch["window"].cpu(), sizes)
        given, px = self._given_boxes(batch)
        if given is not None and px is not None:
            given = given.cpu().float()
            ok = torch.isfinite(given).all(dim=1) & (given[:, 2] > given[:, 0]) & (given[:, 3] > given[:, 1])
            out[ok] = px.cpu().float()[ok]
        return out

    def views(self, batch: dict[str, Any]) -> tuple[Tensor, list[str]]:
        """The views the active loss terms need, stacked in one batch (x first), and their names."""
        pixels = batch["pixels"]
        names = ["x"]
        need_obj = self.lambdas["obj"] != 0 or self.lambdas["kd"] != 0
        need_bg = self.lambdas["bg"] != 0
        parts = [pixels]
        if need_obj or need_bg:
            boxes = self.object_boxes(batch)
            if need_obj:
                parts.append(self.object_views(batch, boxes))
                names.append("obj")
            if need_bg:
                parts.append(background_view(pixels, boxes))
                names.append("bg")
        views = torch.cat(parts)
        pp = self.vlm.preprocess
        return augment_views(views, self.view_augment, pp.mean, pp.std), names

    def object_views(self, batch: dict[str, Any], boxes: Tensor) -> Tensor:
        """x_obj cut from the full-resolution images when the batch has them, else from the tensor."""
        pixels = batch["pixels"]
        if "image" not in batch:
            self.notes["object_view"] = "tensor crop (batch without images)"
            return object_view(pixels, boxes, self.obj_aspect)
        self.notes["object_view"] = "full-resolution crop"
        pp = self.vlm.preprocess
        views = original_object_views(batch["image"], self.image_boxes(batch, boxes), pixels.shape[-1],
                                      self.obj_aspect, pp.interpolation, pp.mean, pp.std)
        return views.to(pixels.device, pixels.dtype)

    # --- training ---------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        views, names = self.views(batch)
        feats = self.encode(views)  # one batched pass over all views
        logits = dict(zip(names, proxy_logits(feats, self.proxies, self.tau_p).split(batch["pixels"].shape[0])))
        labels = batch["label"].to(views.device)
        lam = self.lambdas
        logs: dict[str, Tensor] = {}
        total = logits["x"].new_zeros(())
        for view in names:
            if lam[view] != 0:
                logs[f"proxy_{view}"] = proxy_loss(logits[view], labels)
                total = total + lam[view] * logs[f"proxy_{view}"]
        if lam["kd"] != 0:
            logs["kd"] = distillation_loss(logits["x"], logits["obj"], self.tau_kd)
            total = total + lam["kd"] * logs["kd"]
        if lam["con"] != 0:
            b = labels.shape[0]
            logs["con"] = pairwise_loss(feats[:b], labels, self.beta)
            total = total + lam["con"] * logs["con"]
        return total, logs

    # --- optimisation -----------------------------------------------------------------------------
    def optimizer_param_groups(self, opt_cfg: dict[str, Any]) -> list[dict[str, Any]]:
        """Adapters at the card's optimizer lr / wd; proxies with their own `proxy_lr` / `proxy_weight_decay`."""
        proxy = [self.proxies] if isinstance(self.proxies, nn.Parameter) and self.proxies.requires_grad else []
        adapters = [p for n, p in self.named_parameters()
                    if p.requires_grad and not n.startswith("vlm.") and n != "proxies"]
        cfg = self.phase_config()
        groups: list[dict[str, Any]] = []
        if adapters:
            groups.append({"params": adapters, "name": "adapters"})
        if proxy:
            groups.append({"params": proxy, "name": "proxies", "lr": float(cfg.get("proxy_lr", opt_cfg.get("lr", 1e-3))),
                           "weight_decay": float(cfg.get("proxy_weight_decay", 0.0))})
        return groups

    def phase_config(self) -> dict[str, Any]:
        """Adds `warmup_steps` = round(warmup_epochs / epochs · total steps) when a trainer is attached
        (the runner trains for a step budget, so the warm-up is that share of it)."""
        cfg = super().phase_config()
        frac = float(cfg.get("warmup_epochs", 0) or 0) / max(1e-9, float(cfg.get("epochs", 1) or 1))
        trainer = self._trainer
        if frac > 0 and trainer is not None:
            cfg["warmup_steps"] = round(min(1.0, frac) * max(1, int(trainer.estimated_stepping_batches)))
        return cfg
