"""Backbone specs -> FrozenVLM: `tiny-clip[:k=v,...]`, `hf-clip:<hub id or dir>`, `demo-clip`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import BackboneError
from ..registry import Registry
from .frozen import FrozenVLM
from .preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocess

BACKENDS: Registry[Callable[..., FrozenVLM]] = Registry("backbone backend")

TINY_DEFAULTS: dict[str, int] = dict(seed=0, image_size=32, patch_size=8, vision_width=64, vision_layers=2,
                                     vision_heads=4, text_width=48, text_layers=2, text_heads=4, embed_dim=32,
                                     context_length=77)
TINY_PRESETS: dict[str, dict[str, int]] = {
    # ViT-B/16 shapes with random weights: for parameter accounting, never for speed-free tests.
    "vit-b-16": dict(image_size=224, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                     text_width=512, text_layers=12, text_heads=8, embed_dim=512, context_length=77),
    "vit-b-32": dict(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
                     text_width=512, text_layers=12, text_heads=8, embed_dim=512, context_length=77),
}


def load_backbone(spec: str, allow_download: bool = False) -> FrozenVLM:
    """Resolve a backbone spec string. Unknown backends fail with the list of known ones."""
    backend, _, arg = spec.partition(":")
    if backend not in BACKENDS:
        raise BackboneError(
            f"unknown backbone spec '{spec}'; use one of: tiny-clip, tiny-clip:preset=vit-b-16, demo-clip, "
            "hf-clip:<hub id>, hf-clip:/path/to/dir"
        )
    return BACKENDS.get(backend)(arg, allow_download=allow_download)


def parse_kv(arg: str, defaults: dict[str, int], presets: dict[str, dict[str, int]], spec: str) -> dict[str, int]:
    out = dict(defaults)
    for item in filter(None, arg.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise BackboneError(f"bad option '{item}' in backbone spec '{spec}'; write key=value")
        if key == "preset":
            if value not in presets:
                raise BackboneError(f"unknown preset '{value}' in '{spec}'; known: {sorted(presets)}")
            out.update(presets[value])
        elif key in defaults:
            try:
                out[key] = int(value)
            except ValueError:
                raise BackboneError(f"option '{key}' in '{spec}' must be an integer, got '{value}'") from None
        else:
            raise BackboneError(f"unknown option '{key}' in '{spec}'; known: preset, {', '.join(sorted(defaults))}")
    return out


def tiny_clip_config(cfg: dict[str, int], vocab_size: int):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=cfg["text_width"], intermediate_size=4 * cfg["text_width"],
                         num_hidden_layers=cfg["text_layers"], num_attention_heads=cfg["text_heads"],
                         max_position_embeddings=cfg["context_length"], bos_token_id=vocab_size - 2,
                         eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=cfg["vision_width"], intermediate_size=4 * cfg["vision_width"],
                           num_hidden_layers=cfg["vision_layers"], num_attention_heads=cfg["vision_heads"],
                           image_size=cfg["image_size"], patch_size=cfg["patch_size"]),
        projection_dim=cfg["embed_dim"],
    )


def tiny_vocabulary_texts() -> list[str]:
    """Words the seeded tokenizer spells as single tokens: every shipped class list."""
    from ..paths import splits_dir

    texts: list[str] = []
    for path in sorted(splits_dir().glob("*.txt")):
        texts += path.read_text(encoding="utf-8").splitlines()
    return texts


def build_seeded_clip(cfg: dict[str, int]):
    """A CLIPModel with seeded random weights and our small CLIP-format tokenizer."""
    from transformers import CLIPModel

    from .tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(tiny_vocabulary_texts(), model_max_length=cfg["context_length"])
    torch.manual_seed(cfg["seed"])
    model = CLIPModel(tiny_clip_config(cfg, len(tokenizer))).float().eval()
    return model, tokenizer


@BACKENDS.register("tiny-clip")
def tiny_clip(arg: str = "", allow_download: bool = False) -> FrozenVLM:
    spec = f"tiny-clip:{arg}" if arg else "tiny-clip"
    cfg = parse_kv(arg, TINY_DEFAULTS, TINY_PRESETS, spec)
    model, tokenizer = build_seeded_clip(cfg)
    pre = ImagePreprocess(image_size=cfg["image_size"])
    return FrozenVLM(model, tokenizer, pre, {"backend": "tiny-clip", "name": spec, "config": cfg,
                                             "weights_sha256": state_dict_sha256(model)})


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's tensors in name order: equal hashes mean equal weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def preprocess_from_dir(path: Path, image_size: int) -> ImagePreprocess:
    """Read the checkpoint's preprocessor_config.json (CLIP defaults where absent)."""
    cfg_path = path / "preprocessor_config.json"
    if not cfg_path.is_file():
        return ImagePreprocess(image_size=image_size)
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackboneError(f"{cfg_path}: not valid JSON ({exc}); restore the checkpoint's preprocessor "
                            "config or delete it to use the CLIP defaults") from None
    crop = cfg.get("crop_size", image_size)
    crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
    size = cfg.get("size", crop)
    short = size.get("shortest_edge", crop) if isinstance(size, dict) else int(size)
    interp = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(cfg.get("resample", 3)), "bicubic")
    return ImagePreprocess(image_size=crop, mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
                           std=tuple(cfg.get("image_std", CLIP_STD)), interpolation=interp, resize_short_side=short)
