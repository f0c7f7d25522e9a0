"""One cell on many processes: the ranks are started once, when the command starts, and follow rank 0.

`launch_ranks` starts them with Lightning Fabric's launcher: on a plain machine it re-runs the command once
per extra local rank (as Lightning's Trainer would); under SLURM (srun, submitit) the tasks already are the
ranks and Lightning's SLURMEnvironment reads them from the environment. Every later Trainer finds the
process group ready and launches nothing. Because every rank runs the same command from the start, rank 0
tells the others what it decided per cell (claimed elsewhere, done already, run) with `follow_rank0`.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L

from ..eval.distributed import shard_loader, world


def launch_ranks(accelerator: str, devices: int, num_nodes: int) -> None:
    """Start (or join) the process group of `devices` x `num_nodes` ranks; nothing for one process."""
    if devices * num_nodes <= 1 or world()[1] > 1:
        return
    from .trainer import resolve_accelerator

    accelerator = resolve_accelerator(accelerator)
    fabric = L.Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
    fabric.launch()
    if accelerator == "cuda":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def follow_rank0(decision: Any = None) -> Any:
    """Rank 0's `decision`, on every rank (rank 0 gets its own back); the identity on one process."""
    if world()[1] == 1:
        return decision
    import torch.distributed as dist

    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ValView(L.LightningDataModule):
    """`base`'s training loader, with the validation loaders `val(base)`."""

    def __init__(self, base, val) -> None:
        super().__init__()
        self.base, self.val = base, val

    def train_dataloader(self):
        return self.base.train_dataloader()

    def val_dataloader(self):
        return self.val(self.base)


def sharded_val(source) -> ValView:
    """`source` whose validation loaders are cut to this rank's strided share (the method gathers the shares
    before it scores, see `RetrievalMethod.on_validation_epoch_end`)."""
    return ValView(source, lambda base: [shard_loader(loader) for loader in base.val_dataloader()])


def val_counts(source) -> dict[str, int]:
    """Rows of each validation role that `source` serves (what the gathered shares must add up to)."""
    loaders = source.val_dataloader()
    return {role: len(loader.dataset) for role, loader in zip(("val_query", "val_gallery"), loaders)}
