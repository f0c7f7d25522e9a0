"""Resuming an interrupted cell exactly: fast-forward the batch sampler, restore RNG states."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..rng import rng_state, set_rng_state  # noqa: F401  (re-exported: resume points hold RNG states)


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
    """Test hook: XBENCH_CRASH_AFTER_STEPS=N sends this process a signal after N optimiser steps of a fit
    (of phase XBENCH_CRASH_PHASE only, when set): SIGKILL (a crash; the default) or, with
    XBENCH_CRASH_SIGNAL=INT, SIGINT (Ctrl-C)."""

    def __init__(self, steps: int, phase: str | None = None, sig: str = "KILL") -> None:
        self.steps, self.phase = steps, phase
        self.signal = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}[sig.upper()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps and self.phase in (None, getattr(pl_module, "phase", None)):
            self.steps = float("inf")  # once
            os.kill(os.getpid(), self.signal)


def crash_callback() -> list[L.Callback]:
    steps = os.environ.get("XBENCH_CRASH_AFTER_STEPS")
    if not steps:
        return []
    return [CrashAfterSteps(int(steps), os.environ.get("XBENCH_CRASH_PHASE") or None,
                            os.environ.get("XBENCH_CRASH_SIGNAL", "KILL"))]


class _NoInterruptNotice(logging.Filter):
    """Lightning logs its own line on Ctrl-C; the command line prints the one that says how to resume."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoInterruptNotice())


def fit_interruptible(trainer: L.Trainer, method: L.LightningModule, source, resume: Path | None, phase: str) -> None:
    """`trainer.fit` where Ctrl-C becomes a KeyboardInterrupt that says where training stopped.

    Lightning catches KeyboardInterrupt itself, ignores SIGINT from then on and exits 1; here its handler
    is put back and the interrupt goes on to the runner, which records the cell as `interrupted`."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit(method, datamodule=source, ckpt_path=str(resume) if resume is not None else None)
    except SystemExit:
        if not trainer.interrupted:
            raise
        raise KeyboardInterrupt(_stopped_at(trainer, phase)) from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    if trainer.interrupted:
        raise KeyboardInterrupt(_stopped_at(trainer, phase))


def _stopped_at(trainer: L.Trainer, phase: str) -> str:
    ckpt_dir = Path(trainer.default_root_dir)
    saved = ckpt_dir / "resume.ckpt"
    if saved.is_file():
        step = torch.load(saved, map_location="cpu", weights_only=False).get("global_step")
        return f"phase {phase} at step {trainer.global_step}; it resumes from step {step}"
    return f"phase {phase} at step {trainer.global_step}; no resume point yet, so the phase starts over"


# --- the state at the end of a phase, for a later run that reuses the phase ------------------------------
PHASE_END = "phase_end.pt"


def phase_end_state(method) -> dict[str, Any]:
    """RNG states and the method's training state when a phase's fit ends: a run that reuses the finished
    phase restores them, so that the next phase starts exactly as in one uninterrupted run."""
    return {"rng": rng_state(), "training_state": method.training_state()}


def restore_phase_end(method, phase_dir: Path) -> None:
    path = phase_dir / PHASE_END
    if not path.is_file():  # a phase finished before phase-end states were kept
        return
    state = torch.load(path, map_location="cpu", weights_only=False)
    method.load_training_state(state["training_state"])
    set_rng_state(state["rng"])


