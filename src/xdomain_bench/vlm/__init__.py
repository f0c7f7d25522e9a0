"""The shared frozen-VLM interface and its backends."""

from . import demo_clip, hf_clip, open_clip_backend, siglip  # noqa: E402,F401  (register the backends)
from .backends import load_backbone
from .frozen import FrozenVLM, ImageOutput, TextOutput, TokenBatch
from .sizes import VLMSizes

__all__ = ["FrozenVLM", "ImageOutput", "TextOutput", "TokenBatch", "VLMSizes", "load_backbone"]
