"""A cell's progress bar: the global steps of every phase against the cell's planned total, one bar for all
phases (each phase is its own Lightning fit), with the latest loss and selection score beside it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.callbacks import Callback

from ..progress import Bar, bar


class CellProgress(Callback):
    """Lightning callback driving one `Bar`: position = steps of the phases before this one + this
    trainer's global step (so a resumed phase starts where it stopped)."""

    def __init__(self, handle: Bar, label: str) -> None:
        self.handle, self.label = handle, label
        self.offset = 0  # planned steps of the phases already behind
        self.phase = ""
        self.val = ""

    def start_phase(self, name: str) -> None:
        self.phase, self.val = name, ""
        self.handle.update(self.offset, description=f"{self.label} · {name}")

    def end_phase(self, planned_steps: int) -> None:
        """A phase is over (finished, stopped early or reused): the bar moves to its planned end."""
        self.offset += int(planned_steps)
        self.handle.update(self.offset)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        loss = trainer.callback_metrics.get("train_loss")
        info = f"loss {float(loss):.3f}" if loss is not None else ""
        self.handle.update(self.offset + trainer.global_step, info=" ".join(filter(None, (info, self.val))))

    def on_validation_end(self, trainer, pl_module) -> None:
        score = trainer.callback_metrics.get("val_selection")
        if trainer.is_global_zero and score is not None and not trainer.sanity_checking:
            self.val = f"val {float(score):.3f}"


@contextlib.contextmanager
def cell_progress(label: str, phases: list[dict[str, Any]], enabled: bool) -> Iterator[CellProgress]:
    """One bar over the planned steps of every phase of a cell (`plan_budget`'s phases)."""
    total = sum(int(p["steps"]) for p in phases)
    with bar(label, total, enabled=enabled) as handle:
        yield CellProgress(handle, label)
