"""Distributed evaluation: every rank embeds a strided share of a role (rank r takes samples r, r + W,
r + 2W, ..., so each sample exactly once, nothing repeated), then the shares are gathered with padding to the
longest one and interleaved back into manifest order. Counts are checked against what the caller expects.

Without an initialised process group (or with one process) every helper is the identity."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from ..errors import XBenchError


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share_sizes(n: int, world_size: int) -> list[int]:
    """How many of `n` samples each rank embeds under the strided split."""
    return [len(range(r, n, world_size)) for r in range(world_size)]


class StridedSampler(Sampler[int]):
    """Indices rank, rank + W, rank + 2W, ... of `n`: an unrepeated split (unlike DistributedSampler, no
    padding with repeats), so the ranks' shares are disjoint and cover every index once."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def shard_loader(loader: DataLoader) -> DataLoader:
    """`loader` (unshuffled, batch_size set) restricted to this rank's strided share; itself on one process."""
    rank, size = world()
    if size == 1:
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=StridedSampler(len(loader.dataset),
                      rank, size), collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory)


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(local: Tensor, expected: int, what: str) -> tuple[Tensor, list[int]]:
    """Every rank's strided share of `expected` rows, gathered (padded to the longest share) and put back in
    order; returns the whole tensor on every rank and the rows each rank gave. Raises when the shares are not
    exactly the strided split of `expected` (a sample lost or seen twice)."""
    rank, size = world()
    if size == 1:
        if local.shape[0] != expected:
            raise XBenchError(f"embedded {local.shape[0]} {what} samples but the manifest has {expected}")
        return local, [local.shape[0]]
    device = _device()
    counts_t = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(size)]
    dist.all_gather(counts_t, torch.tensor([local.shape[0]], device=device))
    counts = [int(c.item()) for c in counts_t]
    if counts != share_sizes(expected, size):
        raise XBenchError(f"ranks embedded {counts} {what} samples (total {sum(counts)}), but the manifest's "
                          f"{expected} split over {size} ranks is {share_sizes(expected, size)}; the evaluation "
                          f"must see every sample exactly once")
    longest = max(counts)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return _interleave([part[:n].cpu() for part, n in zip(parts, counts)], size), counts


def embed_sharded(embed: Callable[[DataLoader, int], tuple[Tensor, Tensor]], loader: DataLoader, expected: int,
                  what: str) -> tuple[Tensor, Tensor, list[int]]:
    """Embed this rank's share of `loader` with `embed(loader, n_share)` (which checks its own count), gather:
    (embeddings, labels, rows per rank), the same on every rank."""
    rank, size = world()
    emb, lab = embed(shard_loader(loader), share_sizes(expected, size)[rank])
    emb, counts = gather_rows(emb, expected, what)
    lab, _ = gather_rows(lab, expected, f"{what} label")
    return emb, lab, counts


def _interleave(parts: list[Tensor], size: int) -> Tensor:
    total = sum(p.shape[0] for p in parts)
    out = torch.empty((total, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


def gather_val_store(store: dict[str, list], expected: dict[str, int] | None = None) -> dict[str, list]:
    """A method's validation store ({role: [(embeddings, labels, captions or None), ...]}) holding this rank's
    shares, gathered into one item per role in manifest order, the same on every rank. `expected` gives the
    rows per role (the manifest's); a rank may hold none of a role's rows."""
    rank, size = world()
    if size == 1:
        return store
    roles = sorted(expected) if expected else sorted(store)
    local = {}
    for role in roles:
        items = store.get(role, [])
        caps = [c for _, _, cs in items if cs is not None for c in cs] if any(c is not None for *_, c in items) \
            else None
        local[role] = (torch.cat([e for e, _, _ in items]) if items else None,
                       torch.cat([y for _, y, _ in items]) if items else None, caps)
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, local)
    out: dict[str, list] = {}
    for role in roles:
        shares = [p[role] for p in parts]
        counts = [0 if e is None else e.shape[0] for e, _, _ in shares]
        total = (expected or {}).get(role, sum(counts))
        if counts != share_sizes(total, size):
            raise XBenchError(f"ranks validated {counts} {role} samples, but the split of {total} over {size} "
                              f"ranks is {share_sizes(total, size)}; validation must see every sample once")
        kept = [s for s in shares if s[0] is not None]
        caps = None
        if any(c is not None for _, _, c in kept):
            caps = [None] * total
            for r, (_, _, c) in enumerate(shares):
                caps[r::size] = c or []
        out[role] = [(_interleave([e for e, _, _ in kept], size), _interleave([y for _, y, _ in kept], size), caps)]
    return out
