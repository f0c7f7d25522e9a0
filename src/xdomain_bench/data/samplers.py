"""Domain-balanced batch sampler (METHODS §1.5): B/K images of each of the K domains per batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import ConfigError


class DomainBalancedBatchSampler(Sampler[list[int]]):
    """Yields batches holding `batch_size // K` indices of every domain (the remainder rotates).

    Each domain's indices are reshuffled whenever exhausted, so small domains are oversampled.
    An epoch has `max(1, len // batch_size)` batches. Shuffles depend only on `seed` and the epoch:
    each pass advances the epoch, and `set_epoch` pins it (Lightning calls `batch_sampler.sampler.set_epoch`,
    so `sampler` forwards to this object). Under torch.distributed each rank takes every world-th batch,
    so run the Trainer with `use_distributed_sampler=False`.
    """

    def __init__(self, domain_ids: Sequence[int], batch_size: int, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        ids = np.asarray(domain_ids, dtype=np.int64)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if ids.size == 0:
            raise ConfigError("domain-balanced sampler needs at least one training sample")
        self.domains = sorted(int(d) for d in np.unique(ids))
        self.pools = [np.flatnonzero(ids == d) for d in self.domains]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(ids.size)
        if num_replicas is None or rank is None:
            dist = torch.distributed
            ready = dist.is_available() and dist.is_initialized()
            num_replicas = dist.get_world_size() if ready else 1
            rank = dist.get_rank() if ready else 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> _EpochHandle:
        """Where Lightning looks for `set_epoch` on a batch sampler."""
        return _EpochHandle(self)

    def _total_batches(self) -> int:
        return max(1, self.num_samples // self.batch_size)

    def __len__(self) -> int:
        return len(range(self.rank, self._total_batches(), self.num_replicas))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        k = len(self.pools)
        orders = [rng.permutation(p) for p in self.pools]
        cursors = [0] * k
        base, extra = divmod(self.batch_size, k)
        for b in range(self._total_batches()):
            batch: list[int] = []
            for j in range(k):
                take = base + (1 if (j - b) % k < extra else 0)
                for _ in range(take):
                    if cursors[j] == len(orders[j]):
                        orders[j], cursors[j] = rng.permutation(self.pools[j]), 0
                    batch.append(int(orders[j][cursors[j]]))
                    cursors[j] += 1
            if b % self.num_replicas == self.rank:
                yield batch


class _EpochHandle:
    def __init__(self, owner: DomainBalancedBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class ShuffledBatchSampler(Sampler[list[int]]):
    """Plain shuffled batches (drop_last when that leaves at least one batch); order = f(seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        if n < 1 or batch_size < 1:
            raise ConfigError(f"need at least one sample and batch_size >= 1 (got {n}, {batch_size})")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> _EpochHandle:
        return _EpochHandle(self)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.n >= self.batch_size else 1

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        self.epoch += 1
        for b in range(len(self)):
            yield [int(i) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """Wraps a per-epoch deterministic batch sampler: each index gets its own augmentation seed, a
    function of (seed, epoch, batch, position), and `skip_batches` fast-forwards the next pass.

    Together they make a resumed run see exactly the batches and augmentations of an uninterrupted one.
    """

    def __init__(self, batches: DomainBalancedBatchSampler | ShuffledBatchSampler, seed: int) -> None:
        self.batches, self.seed = batches, seed
        self.skip_batches = 0

    @property
    def sampler(self) -> _EpochHandle:
        return _EpochHandle(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.batches.epoch
        skip, self.skip_batches = self.skip_batches, 0
        for b, batch in enumerate(self.batches):
            if b < skip:
                continue
            seeds = np.random.SeedSequence([self.seed, epoch, b]).generate_state(len(batch), dtype=np.uint32)
            yield [(i, int(s)) for i, s in zip(batch, seeds)]
