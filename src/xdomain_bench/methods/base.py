"""`RetrievalMethod`: the LightningModule every method derives from.

It owns the frozen VLM and the trainable parts and provides embeddings for the evaluator, the
default objectives, optimiser construction from the card, phase handling, trainable-parameter
accounting and checkpoints that hold only trainable state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry, load_entry_points
from ..vlm import FrozenVLM
from .losses import class_cross_entropy, clip_infonce
from .text import frozen_class_features, frozen_text_features

if TYPE_CHECKING:
    from ..data.info import DataInfo

METHODS: Registry[type[RetrievalMethod]] = Registry("method")
METHOD_MODULES = ("zero_shot", "baselines", "clip_adapter", "ucdr_adapter", "pros", "dva", "dalsclip", "dcar")


def register_method(name: str):
    def deco(cls):
        cls.name = name
        return METHODS.register(name)(cls)

    return deco


def get_method_class(name: str) -> type[RetrievalMethod]:
    import importlib

    for mod in METHOD_MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise
    load_entry_points("xdomain_bench.methods", register_method, METHODS)  # third-party methods
    return METHODS.get(name)


def method_names() -> list[str]:
    get_method_class("zero_shot")
    return METHODS.names()


EMBEDDING_SIDES = ("none", "image", "text", "both")


class RetrievalMethod(L.LightningModule):
    """Subclasses build their trainable parts in __init__ and override the hooks they need."""

    name = "base"
    uses_domains = False  # declares what the method uses; it must degrade gracefully without it
    uses_captions = False
    uses_boxes = False
    cacheable = False  # every trainable part sits after the frozen image encoder (H14)
    similarity = "cosine"
    trainable = True  # False: nothing to train, no budget (zero-shot)
    phase_names: tuple[str, ...] = ("main",)  # training phases, in order; multi-phase cards hold `phases.<name>`
    embedding_side = "both"  # which retrieval embeddings training changes: one of EMBEDDING_SIDES

    def __init__(self, vlm: FrozenVLM, info: DataInfo, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.vlm = vlm
        self.info = info
        self.cfg = dict(cfg)
        self.phase = self.phases()[0]
        self.notes: dict[str, Any] = {}
        self._val: dict[str, list] = {}
        self._class_feats: Tensor | None = None

    @classmethod
    def unsupported_reason(cls, info: DataInfo) -> str | None:
        """Why this method cannot run the protocol described by `info`, or None if it can.

        The runner checks it once the DataModule is set up; a reason makes the cell `n/a` with that
        reason in its record and the leaderboard. Prefer degrading gracefully (see `uses_*`) to this.
        """
        return None

    @classmethod
    def data_requests(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """Protocol options this configuration asks the runner to pass to the DataModule (e.g. merged val
        classes); the data layer validates them. None by default."""
        return {}

    # --- phases and trainable state -------------------------------------------------------------
    def phases(self) -> list[str]:
        return list(self.phase_names)

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parts that a phase's `trains` list may select (multi-phase methods)."""
        return {}

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """Parameters trained in `phase`: the groups its `trains` list names, else every parameter the method owns."""
        trains = ((self.cfg.get("phases") or {}).get(phase) or {}).get("trains")
        if trains is None:
            return [p for n, p in self.named_parameters() if not n.startswith("vlm.")]
        groups = self.trainable_groups()
        unknown = sorted(set(trains) - set(groups))
        if unknown:
            raise ConfigError(f"phases.{phase}.trains of {self.name} names unknown parts {unknown}; "
                              f"known: {', '.join(sorted(groups))}")
        params: dict[int, nn.Parameter] = {}
        for group in trains:
            params.update({id(p): p for p in groups[group]})
        return list(params.values())

    def set_phase(self, phase: str) -> None:
        if phase not in self.phases():
            raise ConfigError(f"method '{self.name}' has no phase '{phase}'; phases: {self.phases()}")
        self.phase = phase
        active = {id(p) for p in self.phase_parameters(phase)}
        for n, p in self.named_parameters():
            p.requires_grad_(not n.startswith("vlm.") and id(p) in active)

    def phase_config(self) -> dict[str, Any]:
        """This phase's schedule keys: `phases.<name>` of the card over the top-level defaults."""
        from .config import phase_configs

        return phase_configs(self.cfg, [self.phase])[self.phase]

    def trainable_counts(self) -> dict[str, int]:
        """Trainable parameters per phase and in total (each tensor counted once)."""
        counts, seen = {}, {}
        for phase in self.phases():
            params = self.phase_parameters(phase)
            counts[phase] = sum(p.numel() for p in params)
            seen.update({id(p): p.numel() for p in params})
        counts["total"] = sum(seen.values())
        return counts

    def changed_embeddings(self) -> str:
        """"none", "image", "text" or "both": the embeddings this configuration's training changes. Records and
        leaderboards carry it; with "text" (or "none") image-to-image rows are zero-shot image features."""
        return self.embedding_side

    def needs_train_features(self) -> bool:
        """True when `prepare_fit` wants the frozen image embeddings of the training split before training."""
        return False

    def prepare_fit(self, train_features: Tensor) -> None:
        """Set-up from the (N, E) frozen post-projection embeddings of the training images (runner, before fit)."""

    def has_training(self) -> bool:
        return self.trainable_counts()["total"] > 0

    # --- embeddings (what the evaluator calls) --------------------------------------------------
    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        if "features" in batch:  # cached frozen post-proj features (H14)
            return batch["features"]
        return self.vlm.encode_image(batch["pixels"])

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        return frozen_text_features(self.vlm, texts)

    @property
    def logit_scale(self) -> float:
        return self.vlm.logit_scale

    def class_features(self) -> Tensor:
        """Frozen class-prompt features of the training classes, cached."""
        if self._class_feats is None or self._class_feats.device != self.device:
            names = [self.info.class_names[i] for i in self.info.train_class_ids]
            self._class_feats = frozen_class_features(self.vlm, names).to(self.device)
        return self._class_feats

    # --- training -------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Default objective (§1.5): class CE against text features, or caption InfoNCE on ITR data."""
        img = self.embed_images(batch)
        if self.info.task == "itr":
            loss = clip_infonce(img, self.embed_texts(batch["caption"]), batch["caption"], self.logit_scale)
        else:
            loss = class_cross_entropy(img, self.class_features(), batch["label"], self.logit_scale)
        return loss, {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, logs = self.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss in {self.name} phase {self.phase} at step {self.global_step}")
        bs = len(batch["label"])  # batches carry `pixels` or cached `features` (H14)
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=bs)
        for key, value in logs.items():
            self.log(f"train_{key}", value.detach() if isinstance(value, Tensor) else value, batch_size=bs)
        return loss

    def optimizer_param_groups(self, opt_cfg: dict[str, Any]) -> list[nn.Parameter] | list[dict[str, Any]]:
        """What the optimiser trains: parameters with requires_grad; override to give param groups
        (dicts with their own `lr` / `weight_decay`, which the cosine schedule scales alike)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        cfg = self.phase_config()
        opt_cfg = dict(cfg.get("optimizer") or {"name": "adam", "lr": 1e-3})
        opt = build_optimizer(self.optimizer_param_groups(opt_cfg), opt_cfg)
        schedule = cfg.get("schedule", "constant")
        if schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(cfg.get("warmup_steps", 0))
        if schedule != "cosine":
            raise ConfigError(f"unknown schedule '{schedule}' for {self.name}; use constant or cosine")

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- validation (model selection on the protocol's val split) -------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        key = ("val_query", "val_gallery")[dataloader_idx]
        store = self._val.setdefault(key, [])
        store.append((self.embed_images(batch).float().cpu(), batch["class_id"].cpu(), batch.get("caption")))

    def on_validation_epoch_end(self) -> None:
        from ..eval.distributed import gather_val_store
        from .selection import selection_score

        expected = getattr(self, "val_expected", None)  # under DDP: each rank holds its share (runner/ddp.py)
        store = gather_val_store(self._val, expected)
        if not store:
            return
        score = selection_score(self, store)
        self._val = {}
        self.log("val_selection", score, prog_bar=True)

    # --- checkpoints hold only trainable state --------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Training state that the state dict leaves out and an exact resume needs: every non-persistent
        buffer outside the frozen VLM (momentum copies, feature queues); subclasses add theirs (generators,
        caches). Saved in resume checkpoints and at the end of each phase, never in `selected.pt`."""
        buffers = {}
        for prefix, module in self.named_modules():
            if prefix == "vlm" or prefix.startswith("vlm."):
                continue
            for name in module._non_persistent_buffers_set:
                if module._buffers.get(name) is not None:
                    buffers[f"{prefix}.{name}" if prefix else name] = module._buffers[name]
        return {"buffers": buffers}

    def load_training_state(self, state: dict[str, Any]) -> None:
        own = dict(self.named_buffers())
        for name, value in (state.get("buffers") or {}).items():
            if name in own:
                own[name].copy_(value)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("vlm.")}
        checkpoint["xbench_phase"] = self.phase
        checkpoint["xbench_training_state"] = self.training_state()
        from ..rng import rng_state

        checkpoint["xbench_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for k, v in self.state_dict().items():
            if k.startswith("vlm."):
                state.setdefault(k, v)
        if "xbench_phase" in checkpoint:
            self.set_phase(checkpoint["xbench_phase"])
        if "xbench_training_state" in checkpoint:
            self.load_training_state(checkpoint["xbench_training_state"])
        if "xbench_rng" in checkpoint:
            from ..rng import set_rng_state

            set_rng_state(checkpoint["xbench_rng"])

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("vlm.")}


def build_optimizer(params: list[nn.Parameter] | list[dict], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg.get("name", "adam").lower()
    lr = float(cfg.get("lr", 1e-3))
    wd = float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas") or (0.9, 0.999)))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas") or (0.9, 0.999)))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(cfg.get("momentum") or 0.0))
    raise ConfigError(f"unknown optimizer '{name}'; use adam, adamw or sgd")


def normalize(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)
