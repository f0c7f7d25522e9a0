"""Lightning Trainer construction: device, precision, validation-based model selection."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import ConfigError
from ..io_utils import atomic_write

# The frozen backbone stays in eval mode on purpose (dropout off); Lightning would warn about it.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "auto")


def resolve_accelerator(accelerator: str = "auto") -> str:
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--accelerator cuda was asked for but no CUDA device is visible; use --accelerator cpu")
    return accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """bf16-mixed on CUDA (16-mixed where bf16 is missing), 32-true on CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if accelerator == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed: a process killed while saving leaves
    the previous checkpoint whole (Lightning's own writer truncates the file first)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def build_trainer(*, max_steps: int, accelerator: str, precision: str, ckpt_dir: Path, has_val: bool,
                  val_every: int, devices: int | str = 1, strategy: str = "auto", progress: Any = False,
                  num_nodes: int = 1, deterministic: bool = False, early_stop_patience: int | None = None,
                  logger: Any = False) -> tuple[L.Trainer, ModelCheckpoint | None]:
    """`progress`: a callback drawing the cell's bar (runner/progress.py), or False. `logger`: a Lightning
    logger (runner/loggers.py) or False; with one, every step is logged, learning rates included."""
    from .resume import FastForwardSampler, crash_callback

    callbacks: list[Any] = [FastForwardSampler(), *crash_callback()]
    ckpt = None
    if has_val:
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_selection", mode="max",
                               save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
        callbacks.append(ckpt)
        if early_stop_patience:
            from lightning.pytorch.callbacks import EarlyStopping

            callbacks.append(EarlyStopping(monitor="val_selection", mode="max", patience=int(early_stop_patience)))
    # The resume point: after each validation when there is one (listed after `best`, so that the saved state holds
    # this validation's best score and early-stopping count; a resume point taken before it would lose them and
    # a resumed run could stop later or select another step), else every `val_every` steps.
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="resume", save_top_k=1, enable_version_counter=False,
                                     every_n_train_steps=None if has_val else val_every))
    if progress:
        callbacks.append(progress)
    if logger:
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=-1, accelerator=accelerator, devices=devices, strategy=strategy,
        num_nodes=num_nodes, precision=precision, logger=logger, enable_checkpointing=True, enable_model_summary=False,
        enable_progress_bar=False, callbacks=callbacks, num_sanity_val_steps=0,
        check_val_every_n_epoch=None if has_val else 1, val_check_interval=val_every if has_val else None,
        limit_val_batches=None if has_val else 0, default_root_dir=str(ckpt_dir), deterministic=deterministic,
        log_every_n_steps=1,
        # Our train loaders use our own batch samplers (SeededBatches), which split batches across DDP
        # ranks themselves; every rank validates on the whole val split, so the selection score is exact.
        use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
    )
    return trainer, ckpt
