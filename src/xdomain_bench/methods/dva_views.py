"""DVA's input views, built on the normalised tensor batch (METHODS.md §3.3, step 2).

- object view: the box widened to the target aspect (square by default) on its short side, shifted to
  lie inside the image where possible, cropped at whole pixels from the decoded full-resolution image and
  resized to the input size with the backbone's PIL filter (`original_object_views`; the tensor-only
  `object_view`, which crops the resized tensor and upsamples it, is the fallback for batches without
  images); boxes found on the tensor are mapped to image pixels through the loader's crop window;
- background view: the original with the box region (pixel centres inside the box) set to zero, which
  is the normalisation mean colour;
- per-view augmentation (`ViewAugment`): independent random crop + resize, horizontal flip, colour
  jitter (brightness, contrast, saturation; applied in that fixed order), random grayscale and Gaussian
  blur, all as tensor ops on the de-normalised image. This stands in for DVF's PIL pipeline (resize 256,
  random crop 224, flip, ColorJitter, RandomGrayscale, GaussianBlur) on top of the loader's own
  augmentation, which all three views share.
Randomness comes from torch's global RNG (seeded by the runner).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..data.transforms import INTERPOLATIONS, to_tensor
from ..errors import ConfigError

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def parse_aspect(value: str | float | int) -> float:
    """`"1:1"`, `"3:4"` (width:height) or a number -> width / height."""
    if isinstance(value, str) and ":" in value:
        w, _, h = value.partition(":")
        aspect = float(w) / float(h)
    else:
        aspect = float(value)
    if not aspect > 0:
        raise ConfigError(f"obj_aspect must be positive (e.g. '1:1' or '3:4'), got {value!r}")
    return aspect


def object_crop_windows(boxes: Tensor, height: int, width: int, aspect: float = 1.0) -> Tensor:
    """Integer pixel windows (B, 4) xyxy (ends exclusive) for the object view.

    `boxes` are normalised xyxy. The short side (relative to `aspect` = w/h) grows to match the long
    one about the box centre; the window is then shifted inside the image, and clipped only if it is
    larger than the image."""
    b = boxes.float()
    return _crop_windows(b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height, height, width, aspect)


def _crop_windows(x0: Tensor, y0: Tensor, x1: Tensor, y1: Tensor, height: int, width: int, aspect: float) -> Tensor:
    bw, bh = (x1 - x0).clamp_min(1.0), (y1 - y0).clamp_min(1.0)
    ww = torch.maximum(bw, bh * aspect).clamp(max=width)
    wh = torch.maximum(bh, ww / aspect).clamp(max=height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = (cx - ww / 2).clamp(min=0.0)
    left = torch.minimum(left, width - ww)
    top = (cy - wh / 2).clamp(min=0.0)
    top = torch.minimum(top, height - wh)
    wx0, wy0 = left.round(), top.round()
    wx1 = torch.maximum((left + ww).round(), wx0 + 1).clamp(max=width)
    wy1 = torch.maximum((top + wh).round(), wy0 + 1).clamp(max=height)
    return torch.stack([wx0, wy0, wx1, wy1], dim=1).long()


def crop_resize(pixels: Tensor, windows: Tensor, mode: str = "bilinear") -> Tensor:
    """Crop each image to its integer window (xyxy, ends exclusive) and resize back to the input size."""
    h, w = pixels.shape[-2:]
    out = []
    for img, (x0, y0, x1, y1) in zip(pixels, windows.tolist()):
        crop = img[:, y0:y1, x0:x1].unsqueeze(0)
        if crop.shape[-2:] != (h, w):
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            crop = F.interpolate(crop, size=(h, w), mode=mode, **kwargs)
        out.append(crop)
    return torch.cat(out) if out else pixels.clone()


def object_view(pixels: Tensor, boxes: Tensor, aspect: float = 1.0, mode: str = "bilinear") -> Tensor:
    """x_obj: the (aspect-widened) box cropped and resized to the input size."""
    h, w = pixels.shape[-2:]
    return crop_resize(pixels, object_crop_windows(boxes, h, w, aspect), mode)


def image_boxes_from_tensor(boxes: Tensor, windows: Tensor, sizes: Tensor) -> Tensor:
    """Normalised xyxy boxes of the pixel tensor -> pixel xyxy of the image it was cut from, clipped to it.

    `windows` (B, 5): the tensor's crop in image pixels (left, top, width, height, flipped); `sizes` (B, 2):
    image (width, height)."""
    b, w = boxes.float(), windows.to(boxes.device, torch.float32)
    x0 = torch.where(w[:, 4] > 0, 1 - b[:, 2], b[:, 0])  # undo the flip first
    x1 = torch.where(w[:, 4] > 0, 1 - b[:, 0], b[:, 2])
    xs = torch.stack([x0, x1], 1) * w[:, 2:3] + w[:, 0:1]
    ys = b[:, 1::2] * w[:, 3:4] + w[:, 1:2]
    size = sizes.to(boxes.device, torch.float32)
    xs = torch.minimum(xs.clamp_min(0.0), size[:, 0:1])
    ys = torch.minimum(ys.clamp_min(0.0), size[:, 1:2])
    return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)


def tensor_boxes_from_image(boxes: Tensor, windows: Tensor) -> Tensor:
    """Pixel xyxy boxes of the image -> normalised xyxy of the tensor cut from it (clipped; NaN when the
    box lies outside the crop or is NaN)."""
    b, w = boxes.float(), windows.to(boxes.device, torch.float32)
    xs = ((b[:, 0::2] - w[:, 0:1]) / w[:, 2:3]).clamp(0.0, 1.0)
    ys = ((b[:, 1::2] - w[:, 1:2]) / w[:, 3:4]).clamp(0.0, 1.0)
    flip = w[:, 4:5] > 0
    xs = torch.where(flip, 1 - xs.flip(1), xs)
    out = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)
    empty = ~((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1]))  # also true for NaN
    return out.masked_fill(empty[:, None], float("nan"))


def original_object_views(images: Sequence[Image.Image], boxes: Tensor, size: int, aspect: float,
                          interpolation: str, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """x_obj from the decoded images: each pixel box (xyxy) widened as `object_crop_windows` does, cropped
    at whole pixels from the full-resolution image and resized to size×size with the backbone's filter;
    normalised (B, 3, size, size)."""
    resample = INTERPOLATIONS[interpolation]
    out = []
    for img, box in zip(images, boxes.detach().float().cpu()):
        x0, y0, x1, y1 = box.view(4, 1)
        win = _crop_windows(x0, y0, x1, y1, img.height, img.width, aspect)[0].tolist()
        out.append(to_tensor(img.crop(tuple(win)).resize((size, size), resample), mean, std))
    return torch.stack(out) if out else torch.zeros(0, 3, size, size)


def box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """(B, 1, H, W) True where a pixel centre lies inside the normalised box."""
    ys = (torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5) / width
    b = boxes.float()
    in_y = (ys[None] >= b[:, 1:2]) & (ys[None] <= b[:, 3:4])
    in_x = (xs[None] >= b[:, 0:1]) & (xs[None] <= b[:, 2:3])
    return (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)


def background_view(pixels: Tensor, boxes: Tensor) -> Tensor:
    """x_bg: the box region filled with zeros (= the normalisation mean colour)."""
    mask = box_mask(boxes, *pixels.shape[-2:])
    return pixels.masked_fill(mask, 0.0)


@dataclass(frozen=True)
class ViewAugment:
    """Per-view augmentation strengths; zeros (and crop 1.0) switch a step off."""

    crop: float = 0.875  # side fraction of the random crop (224 of 256 in DVF's pipeline)
    flip: float = 0.5
    jitter: float = 0.4  # brightness, contrast and saturation factors drawn from [1-s, 1+s]
    grayscale: float = 0.2
    blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at 224 px; scaled with the image size

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> ViewAugment:
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown view_augment keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        if "blur_sigma" in cfg:
            cfg["blur_sigma"] = tuple(float(v) for v in cfg["blur_sigma"])
        out = cls(**cfg)
        if not 0.0 < out.crop <= 1.0:
            raise ConfigError(f"view_augment.crop must be in (0, 1], got {out.crop}")
        return out

    @property
    def active(self) -> bool:
        return self.crop < 1.0 or self.flip > 0 or self.jitter > 0 or self.grayscale > 0 or self.blur > 0


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    """factor·a + (1-factor)·b, clamped to [0, 1] (torchvision's blend)."""
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp(0.0, 1.0)


def _gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of one (1, C, H, W) image, reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    img = F.pad(img, (radius, radius, 0, 0), mode="reflect")
    img = F.conv2d(img, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    img = F.pad(img, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(img, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def augment_views(pixels: Tensor, aug: ViewAugment, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Independent augmentation of every image in a normalised batch (B, 3, H, W)."""
    if not aug.active or pixels.shape[0] == 0:
        return pixels
    b, _, h, w = pixels.shape
    x = pixels
    if aug.crop < 1.0:
        cw, ch = max(1, round(w * aug.crop)), max(1, round(h * aug.crop))
        lefts = torch.randint(0, w - cw + 1, (b,))
        tops = torch.randint(0, h - ch + 1, (b,))
        windows = torch.stack([lefts, tops, lefts + cw, tops + ch], dim=1)
        x = crop_resize(x, windows)
    if aug.flip > 0:
        flip = (torch.rand(b) < aug.flip).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if not (aug.jitter > 0 or aug.grayscale > 0 or aug.blur > 0):
        return x
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x * s + m).clamp(0.0, 1.0)
    if aug.jitter > 0:
        def factor() -> Tensor:
            return (1 + (torch.rand(b) * 2 - 1) * aug.jitter).clamp_min(0.0).to(x.device, x.dtype)

        x = (x * factor().view(-1, 1, 1, 1)).clamp(0.0, 1.0)  # brightness
        x = _blend(x, _gray(x).mean(dim=(2, 3), keepdim=True), factor())  # contrast
        x = _blend(x, _gray(x), factor())  # saturation
    if aug.grayscale > 0:
        gray = (torch.rand(b) < aug.grayscale).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(gray, _gray(x).expand_as(x), x)
    if aug.blur > 0:
        chosen = (torch.rand(b) < aug.blur).nonzero().flatten().tolist()
        lo, hi = aug.blur_sigma
        scale = w / 224.0
        if chosen:
            x = x.clone()
        for i in chosen:
            sigma = (lo + float(torch.rand(1)) * (hi - lo)) * scale
            x[i:i + 1] = _gaussian_blur(x[i:i + 1], max(sigma, 1e-3))
    return (x - m) / s
