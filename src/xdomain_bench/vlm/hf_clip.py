"""`hf-clip:<hub id or directory>`: a transformers CLIPModel, offline unless downloads are allowed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..errors import BackboneError
from .backends import BACKENDS, preprocess_from_dir
from .frozen import FrozenVLM

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def _looks_like_path(arg: str) -> bool:
    return arg.startswith(("/", ".", "~")) or Path(arg).expanduser().exists()


def check_checkpoint_dir(path: Path) -> None:
    """Name every missing file of a local checkpoint directory."""
    if not path.is_dir():
        raise BackboneError(f"checkpoint directory not found: {path}; pass hf-clip:/path/to/dir holding a "
                            "CLIPModel saved with save_pretrained (config.json, model.safetensors, tokenizer files)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any(all((path / f).is_file() for f in group) for group in TOKENIZER_FILES):
        missing.append("tokenizer.json or vocab.json+merges.txt")
    if missing:
        raise BackboneError(f"checkpoint directory {path} lacks {', '.join(missing)}; save both the model and "
                            "its tokenizer with save_pretrained into it")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _from_pretrained(cls, source: str, local_only: bool):
    try:
        return cls.from_pretrained(source, local_files_only=local_only, dtype=torch.float32)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return cls.from_pretrained(source, local_files_only=local_only, torch_dtype=torch.float32)


@BACKENDS.register("hf-clip")
def hf_clip(arg: str, allow_download: bool = False) -> FrozenVLM:
    from transformers import AutoTokenizer, CLIPModel

    if not arg:
        raise BackboneError("hf-clip needs a hub id or a directory, e.g. hf-clip:openai/clip-vit-base-patch16")
    local = _looks_like_path(arg)
    source = str(Path(arg).expanduser().resolve()) if local else arg
    if local:
        check_checkpoint_dir(Path(source))
    try:
        model = _from_pretrained(CLIPModel, source, local_only=not allow_download).eval()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
    except (OSError, ValueError) as exc:
        if local:
            raise BackboneError(f"cannot load the checkpoint in {source}: {exc}") from None
        raise BackboneError(
            f"weights for '{arg}' are not in the local Hugging Face cache and downloads are off; either run "
            f"`huggingface-cli download {arg}` on a machine with internet and copy the cache, pass a local "
            "directory as hf-clip:/path/to/dir, or add --allow-download"
        ) from None
    root = Path(source) if local else Path(model.name_or_path if Path(model.name_or_path).is_dir() else ".")
    pre = preprocess_from_dir(root, model.config.vision_config.image_size)
    weights = next((root / f for f in ("model.safetensors", "pytorch_model.bin") if (root / f).is_file()), None)
    spec = {"backend": "hf-clip", "name": f"hf-clip:{arg}", "source": source,
            "weights_sha256": _file_sha256(weights) if weights else None}
    return FrozenVLM(model, tokenizer, pre, spec)
