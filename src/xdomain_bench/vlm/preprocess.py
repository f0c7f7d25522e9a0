"""A backbone's own image preprocessing, as data the transforms are built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocess:
    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    resize_short_side: int | None = None  # defaults to image_size
    # eval resize: "shortest" (short side, centre crop), "longest" (long side, centre pad), "squash" (both sides)
    resize_mode: str = "shortest"

    def to_dict(self) -> dict:
        return asdict(self)
