"""Object boxes from the frozen model's CLS-to-patch attention (METHODS.md §3.3, H10; our choice).

The G×G attention map A of the last vision block is normalised to sum 1. Among all axis-aligned grid
boxes whose mass is ≥ `share`, the one with the smallest area wins; ties go to the larger mass, then to
the top-left-most box (smallest top row, then left column, then bottom row, then right column). A 2-D
prefix sum gives every box's mass in O(1), so the search is O(G⁴) vectorised (G ≤ 24 is cheap). The grid
box is mapped to the pixel tensor's normalised xyxy, enlarged ×`enlarge` about its centre and clipped.

`AttentionBoxCache` keeps the boxes of a run. Keys (`cache` option):
- `none`: no cache; the box is recomputed on every view that needs one (always aligned with it).
- `index`: the dataset row (`role`, `index`): the box is computed on the first view of that row the
  method sees (an augmented training view) and reused for later, differently augmented views.
- `pixels`: a SHA-1 of the pixel tensor: exact reuse, hits only when the very same tensor recurs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError

CACHE_MODES = ("none", "index", "pixels")


def _grid_boxes(g: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All grid boxes (r0, c0, r1, c1), ends exclusive, in lexicographic (r0, c0, r1, c1) order."""
    pairs = torch.tensor([(a, b) for a in range(g) for b in range(a + 1, g + 1)], dtype=torch.long, device=device)
    n = pairs.shape[0]
    rows = pairs.repeat_interleave(n, dim=0)  # (n*n, 2): row pair is the major key
    cols = pairs.repeat(n, 1)
    r0, r1, c0, c1 = rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1]
    order = torch.argsort(((r0 * (g + 1) + c0) * (g + 1) + r1) * (g + 1) + c1)
    return r0[order], c0[order], r1[order], c1[order]


def _select_first(cand: Tensor, key: Tensor, largest: bool = False) -> Tensor:
    """Restrict the candidate mask (B, N) to the rows' extreme value of `key`."""
    fill = float("-inf") if largest else float("inf")
    masked = torch.where(cand, key, torch.full_like(key, fill))
    best = masked.amax(dim=1, keepdim=True) if largest else masked.amin(dim=1, keepdim=True)
    return cand & (masked == best)


@torch.no_grad()
def smallest_mass_box(attn: Tensor, share: float = 0.6) -> Tensor:
    """Grid boxes (B, 4) as integer xyxy = (c0, r0, c1, r1), ends exclusive, for maps (B, G, G) or (G, G).

    The smallest-area box with normalised mass ≥ `share`; ties: larger mass, then top-left first.
    Maps that are all zero (or not finite) count as uniform."""
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"attention box share must be in (0, 1], got {share}")
    single = attn.dim() == 2
    a = (attn.unsqueeze(0) if single else attn).double().clamp_min(0.0)
    b, g, g2 = a.shape
    if g != g2:
        raise ConfigError(f"attention map must be square (G×G), got {tuple(a.shape[1:])}")
    total = a.sum(dim=(1, 2), keepdim=True)
    bad = ~torch.isfinite(total) | (total <= 0)
    a = torch.where(bad, torch.ones_like(a), torch.nan_to_num(a, nan=0.0, posinf=0.0))
    a = a / a.sum(dim=(1, 2), keepdim=True)
    prefix = torch.zeros(b, g + 1, g + 1, dtype=a.dtype, device=a.device)
    prefix[:, 1:, 1:] = a.cumsum(1).cumsum(2)
    flat = prefix.flatten(1)
    r0, c0, r1, c1 = _grid_boxes(g, a.device)

    def at(r: Tensor, c: Tensor) -> Tensor:
        return flat[:, r * (g + 1) + c]

    mass = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)  # (B, N)
    area = ((r1 - r0) * (c1 - c0)).to(a.dtype).expand_as(mass)
    full = ((r0 == 0) & (c0 == 0) & (r1 == g) & (c1 == g)).expand_as(mass)
    cand = (mass >= share) | full  # the whole grid always qualifies (guards against rounding)
    cand = _select_first(cand, area)
    cand = _select_first(cand, mass, largest=True)
    for key in (r0, c0, r1, c1):
        cand = _select_first(cand, key.to(a.dtype).expand_as(mass))
    pick = cand.int().argmax(dim=1)
    boxes = torch.stack([c0[pick], r0[pick], c1[pick], r1[pick]], dim=1)
    return boxes[0] if single else boxes


def grid_to_normalized(grid_boxes: Tensor, grid: int, enlarge: float = 1.1) -> Tensor:
    """Grid xyxy (ends exclusive) -> normalised xyxy of the pixel tensor, enlarged about the centre, clipped."""
    box = grid_boxes.float() / grid
    cx, cy = (box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2
    hw, hh = (box[..., 2] - box[..., 0]) * enlarge / 2, (box[..., 3] - box[..., 1]) * enlarge / 2
    return torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=-1).clamp(0.0, 1.0)


@torch.no_grad()
def attention_boxes(vlm, pixels: Tensor, share: float = 0.6, enlarge: float = 1.1) -> Tensor:
    """Normalised xyxy boxes (B, 4) from the frozen model's CLS-to-patch attention (H10)."""
    attn = vlm.class_attention_map(pixels).float()
    return grid_to_normalized(smallest_mass_box(attn, share), attn.shape[-1], enlarge).to(pixels.device)


def pixel_key(pixels: Tensor) -> str:
    """SHA-1 of one image tensor's bytes (dtype and shape included)."""
    t = pixels.detach().contiguous().cpu()
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()


class AttentionBoxCache:
    """Attention boxes for one run, keyed by row index, pixel hash, or not cached (see module doc)."""

    def __init__(self, mode: str = "none", share: float = 0.6, enlarge: float = 1.1) -> None:
        if mode not in CACHE_MODES:
            raise ConfigError(f"unknown attention box cache '{mode}'; use one of {', '.join(CACHE_MODES)}")
        self.mode, self.share, self.enlarge = mode, float(share), float(enlarge)
        self.store: dict[Hashable, Tensor] = {}
        self.computed = 0
        self.hits = 0

    def keys(self, pixels: Tensor, index: Sequence[int] | Tensor | None, role: str) -> list[Hashable] | None:
        if self.mode == "index" and index is not None:
            return [(role, int(i)) for i in index]
        if self.mode == "pixels" or (self.mode == "index" and index is None):
            return [pixel_key(p) for p in pixels]
        return None

    def boxes(self, vlm, pixels: Tensor, index: Sequence[int] | Tensor | None = None, role: str = "train") -> Tensor:
        """Normalised xyxy (B, 4) for these images: cached ones are reused, the rest computed in one pass."""
        keys = self.keys(pixels, index, role)
        out = torch.empty(pixels.shape[0], 4, dtype=torch.float32, device=pixels.device)
        todo = list(range(pixels.shape[0])) if keys is None else [i for i, k in enumerate(keys) if k not in self.store]
        if keys is not None:
            hit = [i for i, k in enumerate(keys) if k in self.store]
            if hit:
                out[torch.tensor(hit, device=out.device)] = torch.stack([self.store[keys[i]] for i in hit]).to(out.device)
            self.hits += len(hit)
        if todo:
            rows = torch.tensor(todo, device=pixels.device)
            fresh = attention_boxes(vlm, pixels[rows], self.share, self.enlarge)
            out[rows] = fresh
            self.computed += len(todo)
            if keys is not None:
                for j, row in zip(todo, fresh.detach().cpu()):
                    self.store[keys[j]] = row
        return out

    def state(self) -> dict[str, int | str]:
        return {"mode": self.mode, "cached": len(self.store), "computed": self.computed, "hits": self.hits}

    def dump(self) -> dict[str, Any]:
        """The cache as plain lists and tensors (a resume checkpoint restores it with `restore`)."""
        keys = [list(k) if isinstance(k, tuple) else k for k in self.store]
        boxes = torch.stack(list(self.store.values())) if self.store else torch.zeros(0, 4)
        return {"keys": keys, "boxes": boxes, "computed": self.computed, "hits": self.hits}

    def restore(self, dumped: dict[str, Any]) -> None:
        keys = [tuple(k) if isinstance(k, list) else k for k in dumped["keys"]]
        self.store = dict(zip(keys, dumped["boxes"].float().cpu()))
        self.computed, self.hits = int(dumped["computed"]), int(dumped["hits"])
