"""`hf-clip:<hub id or directory>`: a transformers CLIPModel, offline unless downloads are allowed.

A hub id is first resolved to its snapshot folder in the local Hugging Face cache (or downloaded into
it when downloads are allowed); everything else -- weights, tokenizer, preprocessing, weights hash --
is then read from that one folder, exactly as for a local directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import BackboneError
from .backends import BACKENDS, preprocess_from_dir
from .frozen import FrozenVLM

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
# What a download fetches: configs, tokenizer files and the safetensors weights (no TF/Flax copies).
DOWNLOAD_PATTERNS = ["*.json", "*.txt", "model.safetensors"]


def _looks_like_path(arg: str) -> bool:
    return arg.startswith(("/", ".", "~")) or Path(arg).expanduser().exists()


def check_checkpoint_dir(path: Path, what: str = "checkpoint directory") -> None:
    """Name every missing file of a checkpoint directory (a local folder or a hub snapshot)."""
    if not path.is_dir():
        raise BackboneError(f"{what} not found: {path}; pass hf-clip:/path/to/dir holding a "
                            "CLIPModel saved with save_pretrained (config.json, model.safetensors, tokenizer files)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any(all((path / f).is_file() for f in group) for group in TOKENIZER_FILES):
        missing.append("tokenizer.json or vocab.json+merges.txt")
    if missing:
        raise BackboneError(f"{what} {path} lacks {', '.join(missing)}; save both the model and "
                            "its tokenizer with save_pretrained into it")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, else HF_HOME/hub)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def _offline_hint(repo_id: str, cache: Path) -> str:
    return (f"run `hf download {repo_id}` on a machine with internet and copy its cache into {cache} "
            "(HF_HUB_CACHE), or pass a local directory as hf-clip:/path/to/dir")


def resolve_hub_snapshot(repo_id: str, allow_download: bool) -> Path:
    """The snapshot folder of `repo_id` in the local hub cache; downloads into it only when allowed."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = hub_cache_dir()
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=not allow_download,
                                        allow_patterns=DOWNLOAD_PATTERNS))
        if allow_download and not any((folder / f).is_file() for f in WEIGHT_FILES):
            folder = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=["pytorch_model.bin"]))
    except HFValidationError as exc:
        raise BackboneError(f"'{repo_id}' is neither an existing directory nor a valid hub id ({exc}); "
                            "pass hf-clip:<org>/<name> or hf-clip:/path/to/dir") from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise BackboneError(f"the Hugging Face hub refused '{repo_id}' ({type(exc).__name__}): the id is wrong, or "
                            "the repository is private or gated; check the id, or log in with `hf auth login`") from None
    except LocalEntryNotFoundError as exc:
        if not allow_download:
            raise BackboneError(f"weights for '{repo_id}' are not in the local Hugging Face cache ({cache}) and "
                                f"downloads are off; either {_offline_hint(repo_id, cache)}, "
                                "or add --allow-download") from None
        if constants.HF_HUB_OFFLINE:
            raise BackboneError(f"cannot download '{repo_id}': HF_HUB_OFFLINE is set, which forbids downloads; "
                                "unset it (or set HF_HUB_OFFLINE=0), or " + _offline_hint(repo_id, cache)) from None
        cause = exc.__cause__ or exc
        raise BackboneError(f"cannot download '{repo_id}': the network or the Hugging Face hub is unreachable "
                            f"({type(cause).__name__}); check the connection (and HF_ENDPOINT), or "
                            + _offline_hint(repo_id, cache)) from None
    return folder


def config_model_type(root: Path) -> str:
    """`model_type` of a checkpoint folder's config.json."""
    try:
        cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackboneError(f"{root / 'config.json'}: not valid JSON ({exc}); re-save or re-download the "
                            "checkpoint") from None
    return str(cfg.get("model_type", "")) if isinstance(cfg, dict) else ""


def _from_pretrained(cls, source: Path):
    try:
        return cls.from_pretrained(source, local_files_only=True, dtype=torch.float32)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return cls.from_pretrained(source, local_files_only=True, torch_dtype=torch.float32)


@BACKENDS.register("hf-clip")
def hf_clip(arg: str, allow_download: bool = False) -> FrozenVLM:
    from transformers import AutoTokenizer, CLIPModel

    if not arg:
        raise BackboneError("hf-clip needs a hub id or a directory, e.g. hf-clip:openai/clip-vit-base-patch16")
    spec = {"backend": "hf-clip", "name": f"hf-clip:{arg}"}
    if _looks_like_path(arg):
        root = Path(arg).expanduser().resolve()
        check_checkpoint_dir(root)
        spec["source"] = str(root)
    else:
        root = resolve_hub_snapshot(arg, allow_download)
        check_checkpoint_dir(root, what=f"the cached snapshot of '{arg}'")
        spec.update(source=arg, snapshot=str(root), revision=root.name)
    model_type = config_model_type(root)
    if model_type in ("siglip", "siglip2"):
        raise BackboneError(f"{root} holds a SigLIP model ('{model_type}'), not a CLIPModel; load it with "
                            f"hf-siglip:{arg}")
    if model_type != "clip":
        raise BackboneError(f"{root} holds a '{model_type}' model, not a CLIPModel (model_type 'clip'); hf-clip "
                            "loads transformers CLIP checkpoints only (`xbench backbones` lists the other backends)")
    try:
        model = _from_pretrained(CLIPModel, root).eval()
        tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackboneError(f"cannot load the checkpoint in {root}: {reason}; re-save it with save_pretrained "
                            "or re-download it") from None
    pre = preprocess_from_dir(root, model.config.vision_config.image_size)
    weights = next(root / f for f in WEIGHT_FILES if (root / f).is_file())
    spec.update(weights_file=weights.name, weights_sha256=file_sha256(weights))
    return FrozenVLM(model, tokenizer, pre, spec)
