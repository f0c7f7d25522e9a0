"""Momentum copies (H12) and per-class FIFO feature queues (UCDR-Adapter §2.3, §2.4).

The EMA copy holds only the method's trainable tensors as buffers; the frozen backbone is shared.
Both are training-time state, left out of the state dict (persistent=False) and so out of the selected
weights; resume checkpoints carry them (`RetrievalMethod.training_state`), so a resumed run is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class EMACopy(nn.Module):
    """θ_m ← m·θ_m + (1 − m)·θ over named tensors. `init`: `copy` of the online tensors, or `random`
    (an independent draw from `init_fn`, as the UCDR-Adapter release's momentum encoder)."""

    def __init__(
        self,
        online: dict[str, Tensor],
        momentum: float = 0.999,
        init: str = "copy",
        init_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if init not in ("copy", "random"):
            raise ValueError(f"momentum init must be 'copy' or 'random', not {init!r}")
        if init == "random" and init_fn is None:
            raise ValueError("momentum init 'random' needs an init_fn")
        self.momentum = float(momentum)
        self.names = list(online)
        for name, tensor in online.items():
            value = tensor.detach().clone() if init == "copy" else init_fn(tensor.detach())
            self.register_buffer(self._key(name), value.to(tensor.dtype), persistent=False)

    @staticmethod
    def _key(name: str) -> str:
        return "ema_" + name.replace(".", "_")

    def __getitem__(self, name: str) -> Tensor:
        return getattr(self, self._key(name))

    @torch.no_grad()
    def update(self, online: dict[str, Tensor]) -> None:
        for name in self.names:
            self[name].mul_(self.momentum).add_(
                online[name].detach().to(self[name].dtype), alpha=1 - self.momentum
            )


class ClassQueues(nn.Module):
    """One FIFO queue of length `length` per class holding (detached) E-dim features."""

    def __init__(self, num_classes: int, length: int, dim: int) -> None:
        super().__init__()
        self.length = int(length)
        self.register_buffer("feats", torch.zeros(num_classes, self.length, dim), persistent=False)
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long), persistent=False)
        self.register_buffer("head", torch.zeros(num_classes, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def push(self, feats: Tensor, labels: Tensor) -> None:
        """Append in batch order; a full queue drops its oldest entries (labels < 0 are skipped)."""
        labels = labels.to(self.count.device)
        keep = labels >= 0
        f, y = feats.detach().to(self.feats.dtype)[keep], labels[keep]
        if y.numel() == 0:
            return
        onehot = torch.nn.functional.one_hot(y, self.feats.shape[0])
        rank = (onehot.cumsum(0) - 1).gather(1, y.unsqueeze(1)).squeeze(1)  # earlier same-class samples
        per_class = onehot.sum(0)
        last = rank >= per_class[y] - self.length  # only the last `length` of a class survive
        slot = (self.head[y] + rank) % self.length
        self.feats[y[last], slot[last]] = f[last]
        self.head.copy_((self.head + per_class) % self.length)
        self.count.copy_((self.count + per_class).clamp(max=self.length))

    def entries(self) -> tuple[Tensor, Tensor]:
        """(N, E) stored features and their (N,) classes."""
        valid = torch.arange(self.length, device=self.count.device).unsqueeze(0) < self.count.unsqueeze(1)
        cls = torch.arange(self.feats.shape[0], device=self.count.device).unsqueeze(1).expand_as(valid)
        return self.feats[valid], cls[valid]

    def sample(
        self, labels: Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """For each anchor label: n positives drawn uniformly (with replacement) from its class queue and
        n negatives from the union of the other queues. Returns (B, n, E), (B, n, E) and a (B,) mask of
        anchors whose positive and negative pools are both non-empty."""
        feats, cls = self.entries()
        b, dim = labels.shape[0], self.feats.shape[-1]
        pos_w = (cls.unsqueeze(0) == labels.unsqueeze(1)).float()  # (B, N)
        neg_w = 1.0 - pos_w
        ok = (pos_w.sum(1) > 0) & (neg_w.sum(1) > 0) & (labels >= 0)
        pos = torch.zeros(b, n, dim, device=feats.device, dtype=feats.dtype)
        neg = torch.zeros_like(pos)
        if bool(ok.any()):
            rows = ok.nonzero().squeeze(1)
            pi = torch.multinomial(pos_w[rows].cpu(), n, replacement=True, generator=generator).to(
                feats.device
            )
            ni = torch.multinomial(neg_w[rows].cpu(), n, replacement=True, generator=generator).to(
                feats.device
            )
            pos[rows], neg[rows] = feats[pi], feats[ni]
        return pos, neg, ok
