"""Bottleneck adapters that run in parallel to a frozen projection (METHODS.md H9, DVA §3.2).

`BottleneckAdapter(width, rank)` maps the LayerNorm-ed block input h (…, W) to up(GELU(down(h))):
down is r×W (Kaiming-uniform), up is W×r (zeros), no biases, scale 1. With the zero up-projection its
output is exactly zero, so a frozen encoder with these adapters attached reproduces the plain encoder
bit for bit until the first optimiser step.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class BottleneckAdapter(nn.Module):
    """x -> scale · up(GELU(down(x))); down r×W Kaiming-uniform, up W×r zero-initialised, no biases."""

    def __init__(self, width: int, rank: int, scale: float = 1.0) -> None:
        super().__init__()
        if rank < 1 or width < 1:
            raise ValueError(f"adapter width and rank must be positive, got width={width}, rank={rank}")
        self.width, self.rank, self.scale = width, rank, float(scale)
        self.down = nn.Linear(width, rank, bias=False)
        self.up = nn.Linear(rank, width, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the default init of nn.Linear: Kaiming-uniform with a = sqrt(5), i.e. bound 1/sqrt(fan_in)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        # run in the trainable weights' dtype (fp32) and hand back the caller's dtype (bf16 under autocast)
        out = self.up(F.gelu(self.down(x.to(self.down.weight.dtype))))
        if self.scale != 1.0:
            out = out * self.scale
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"width={self.width}, rank={self.rank}, scale={self.scale}"


def adapter_stack(width: int, rank: int, layers: int, scale: float = 1.0) -> nn.ModuleList:
    """One adapter per transformer block."""
    return nn.ModuleList(BottleneckAdapter(width, rank, scale) for _ in range(layers))


def adapter_parameter_count(width: int, rank: int, layers: int, per_block: int = 2) -> int:
    """Parameters of `per_block` adapters (e.g. Q and K) in each of `layers` blocks: per_block·L·2·W·r."""
    return per_block * layers * 2 * width * rank
