"""Image transforms built from a backbone's ImagePreprocess (PIL + torch, no torchvision).

Both transforms take a PIL image and an optional pixel box `(x0, y0, x1, y1)` in the input image's
coordinates (the image spans [0, W] x [0, H]) and return the normalised (3, S, S) tensor and the box
in the output tensor's normalised [0, 1] coordinates (NaN when there is no box or it was cropped away).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..vlm.preprocess import ImagePreprocess

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

Box = Sequence[float] | None
NAN_BOX = (math.nan,) * 4


def _interpolation(name: str) -> Image.Resampling:
    if name not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation '{name}'; known: {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB PIL image -> normalised float32 (3, H, W)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s


def _map_box(box: Box, crop: tuple[float, float, float, float], flip: bool) -> torch.Tensor:
    """Map a pixel box through a crop window (left, top, width, height) and an optional h-flip."""
    if box is None or any(not math.isfinite(float(v)) for v in box):
        return torch.tensor(NAN_BOX, dtype=torch.float32)
    left, top, cw, ch = crop
    x0, y0, x1, y1 = (float(v) for v in box)
    nx0, nx1 = sorted(((x0 - left) / cw, (x1 - left) / cw))
    ny0, ny1 = sorted(((y0 - top) / ch, (y1 - top) / ch))
    nx0, nx1 = min(max(nx0, 0.0), 1.0), min(max(nx1, 0.0), 1.0)
    ny0, ny1 = min(max(ny0, 0.0), 1.0), min(max(ny1, 0.0), 1.0)
    if nx1 <= nx0 or ny1 <= ny0:
        return torch.tensor(NAN_BOX, dtype=torch.float32)
    if flip:
        nx0, nx1 = 1.0 - nx1, 1.0 - nx0
    return torch.tensor((nx0, ny0, nx1, ny1), dtype=torch.float32)


def _window(crop: Sequence[float], flip: bool) -> torch.Tensor:
    return torch.tensor((*(float(v) for v in crop), float(flip)), dtype=torch.float32)


class EvalTransform:
    """Resize the short side (to `resize_short_side or image_size`), centre crop, normalise."""

    def __init__(self, preprocess: ImagePreprocess) -> None:
        self.pp = preprocess
        self.size = int(preprocess.image_size)
        self.short = int(preprocess.resize_short_side or preprocess.image_size)
        self.resample = _interpolation(preprocess.interpolation)

    def resized_size(self, w: int, h: int) -> tuple[int, int]:
        """Size after the short-side resize (long side truncated, as torchvision does); the preprocessing's
        "squash" mode resizes both sides to image_size, "longest" the long side (the crop then pads)."""
        mode = self.pp.resize_mode
        if mode == "squash":
            return self.size, self.size
        if mode == "longest":
            scale = self.size / max(w, h)
            return max(1, int(w * scale)), max(1, int(h * scale))
        if w <= h:
            return self.short, int(self.short * h / w)
        return int(self.short * w / h), self.short

    def __call__(self, img: Image.Image, box: Box = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.with_window(img, box, generator)[:2]

    def with_window(self, img: Image.Image, box: Box = None, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Also the output's window in input pixels: (left, top, width, height, flipped)."""
        w, h = img.size
        rw, rh = self.resized_size(w, h)
        img = img.resize((rw, rh), self.resample)
        s = self.size
        left, top = int(round((rw - s) / 2.0)), int(round((rh - s) / 2.0))
        # PIL pads with black where the crop leaves the image (resize_short_side < image_size)
        img = img.crop((left, top, left + s, top + s))
        sx, sy = rw / w, rh / h
        crop = (left / sx, top / sy, s / sx, s / sy)  # crop window in input-pixel coordinates
        return to_tensor(img, self.pp.mean, self.pp.std), _map_box(box, crop, flip=False), _window(crop, False)


class TrainTransform:
    """RandomResizedCrop(scale, ratio) to image_size, horizontal flip, normalise (METHODS §1.5).

    Randomness comes from `generator` or torch's global RNG, which Lightning's
    `seed_everything(workers=True)` seeds per worker, so augmentations are reproducible.
    """

    def __init__(self, preprocess: ImagePreprocess, scale: tuple[float, float] = (0.8, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5) -> None:
        self.pp = preprocess
        self.size = int(preprocess.image_size)
        self.scale, self.ratio, self.flip_p = scale, ratio, flip_p
        self.resample = _interpolation(preprocess.interpolation)

    def crop_params(self, w: int, h: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the random crop; torchvision's algorithm."""
        area = w * h
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(2, generator=generator).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_r[0] + u[1] * (log_r[1] - log_r[0]))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
                return left, top, cw, ch
        in_ratio = w / h  # fallback: central crop with the ratio clamped
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (w - cw) // 2, (h - ch) // 2, cw, ch

    def __call__(self, img: Image.Image, box: Box = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.with_window(img, box, generator)[:2]

    def with_window(self, img: Image.Image, box: Box = None, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Also the output's window in input pixels: (left, top, width, height, flipped)."""
        w, h = img.size
        left, top, cw, ch = self.crop_params(w, h, generator)
        s = self.size
        img = img.resize((s, s), self.resample, box=(left, top, left + cw, top + ch))
        flip = bool(torch.rand(1, generator=generator).item() < self.flip_p)
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        window = (left, top, cw, ch)
        return to_tensor(img, self.pp.mean, self.pp.std), _map_box(box, window, flip), _window(window, flip)


def build_transforms(preprocess: ImagePreprocess) -> tuple[TrainTransform, EvalTransform]:
    """(train, eval) transforms for a backbone's preprocessing."""
    return TrainTransform(preprocess), EvalTransform(preprocess)
