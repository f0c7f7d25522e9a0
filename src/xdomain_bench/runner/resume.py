"""Resuming an interrupted cell exactly: fast-forward the batch sampler, restore RNG states."""

from __future__ import annotations

import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch


class FastForwardSampler(L.Callback):
    """On a resumed fit, skip the batches of the current epoch that were already trained on."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        if batch_sampler is None or not hasattr(batch_sampler, "skip_batches"):
            return
        per_epoch = len(batch_sampler)
        batch_sampler.skip_batches = trainer.global_step % per_epoch if per_epoch else 0


class CrashAfterSteps(L.Callback):
    """Test hook: XBENCH_CRASH_AFTER_STEPS=N kills the fit after N optimiser steps (simulates a crash)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            raise KeyboardInterrupt(f"simulated crash after {self.steps} steps")


def crash_callback() -> list[L.Callback]:
    steps = os.environ.get("XBENCH_CRASH_AFTER_STEPS")
    return [CrashAfterSteps(int(steps))] if steps else []


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]  # plain types: weights_only loads
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
