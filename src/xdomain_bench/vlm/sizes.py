"""Sizes a method reads from its backbone (METHODS.md H1); methods never hard-code them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VLMSizes:
    vision_width: int  # W
    text_width: int  # T
    embed_dim: int  # E
    vision_layers: int  # L_v
    text_layers: int  # L_t
    vision_heads: int
    text_heads: int
    patch_size: int  # P
    image_size: int
    context_length: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def to_dict(self) -> dict:
        return {**asdict(self), "grid": self.grid, "num_patches": self.num_patches}
