"""What `xbench backbones` lists: the backend kinds, and open_clip's architectures and pretrained tags."""

from __future__ import annotations

from typing import Any

from ..errors import BackboneError

BACKEND_LINES = (
    ("tiny-clip[:K=V,...]", "seeded random CLIP (tests; preset=vit-b-16 for ViT-B/16 shapes)"),
    ("demo-clip[:K=V,...]", "small CLIP pretrained on the synthetic world (cached)"),
    ("hf-clip:<hub id or dir>", "transformers CLIPModel"),
    ("hf-siglip:<hub id or dir>", "transformers SiglipModel (SigLIP, fixed-resolution SigLIP2)"),
    ("openai-clip:/path/to/ViT-B-32.pt", "OpenAI release file (TorchScript or state dict)"),
    ("open-clip:ARCH/TAG | open-clip:ARCH:/path", "open_clip architecture with a pretrained tag or a file"),
)


def backend_lines() -> list[tuple[str, str]]:
    return list(BACKEND_LINES)


def open_clip_rows(arch_filter: str = "") -> list[dict[str, Any]] | None:
    """One row per (architecture, tag) open_clip knows: cached locally, and supported (True or the reason);
    None when open_clip is not installed. Touches no network."""
    try:
        import open_clip
    except ImportError:
        return None
    from .open_clip_backend import cached_weights, check_open_clip_config

    support: dict[str, bool | str] = {}
    rows = []
    for arch, tag in open_clip.list_pretrained():
        if arch_filter.lower() not in arch.lower():
            continue
        if arch not in support:
            cfg = open_clip.get_model_config(arch)
            try:
                check_open_clip_config(arch, cfg or {"unknown": True})
                support[arch] = True
            except BackboneError as exc:
                support[arch] = str(exc).split(": ", 1)[-1].split("; supported are")[0]
        cached = cached_weights(open_clip.get_pretrained_cfg(arch, tag)) is not None
        rows.append({"arch": arch, "tag": tag, "cached": cached, "supported": support[arch]})
    return rows
