"""`openai-clip:/path.pt` and `open-clip:ARCH/TAG` | `open-clip:ARCH:/path`: converted to transformers' CLIPModel.

Both load a state dict in the OpenAI layout and convert it (clip_convert.py); neither runs either library's
model code. open_clip (optional extra `open_clip`) supplies the architecture configs, the pretrained tags
with their preprocessing, and the BPE vocabulary of OpenAI's tokenizer. Weights are read from local files
or the local caches only, unless downloads are allowed.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path
from typing import Any

from ..errors import BackboneError
from .backends import BACKENDS
from .clip_convert import build_clip_model, load_openai_file
from .frozen import FrozenVLM
from .hf_clip import file_sha256, hub_cache_dir
from .preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocess

INSTALL_HINT = "pip install '.[open_clip]' (open_clip_torch)"
URL_CACHE = Path("~/.cache/clip")  # where open_clip keeps files it fetched by URL (OpenAI's .pt files)


def require_open_clip(what: str):
    try:
        import open_clip
    except ImportError:
        raise BackboneError(f"{what} needs open_clip_torch, which is not installed; {INSTALL_HINT}") from None
    return open_clip


def openai_tokenizer(context_length: int):
    """OpenAI's CLIP tokenizer as a transformers CLIPTokenizer, built from the BPE file open_clip ships."""
    from .tokenizer import clip_tokenizer_from_merges

    open_clip = require_open_clip("the CLIP tokenizer (OpenAI's BPE vocabulary)")
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    return clip_tokenizer_from_merges(merges, model_max_length=context_length, printable_first=True)


def _check_vocab(shapes: dict[str, Any], name: str) -> None:
    if shapes["vocab_size"] != 49408:
        raise BackboneError(f"{name} has a {shapes['vocab_size']}-token vocabulary, not OpenAI's 49,408; only "
                            "checkpoints that use OpenAI's CLIP tokenizer are supported")


def _file(arg: str, spec: str) -> Path:
    path = Path(arg).expanduser().resolve()
    if not path.is_file():
        raise BackboneError(f"checkpoint file not found: {path} (from '{spec}'); pass the path of a .pt/.bin/"
                            ".safetensors file")
    return path


def read_state_dict(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_openai_file(path)


@BACKENDS.register("openai-clip")
def openai_clip(arg: str, allow_download: bool = False) -> FrozenVLM:
    spec = f"openai-clip:{arg}"
    if not arg:
        raise BackboneError("openai-clip needs a file, e.g. openai-clip:/models/ViT-B-32.pt (OpenAI's release file)")
    path = _file(arg, spec)
    model, shapes = build_clip_model(read_state_dict(path), spec, quick_gelu=True)  # OpenAI's CLIPs use QuickGELU
    _check_vocab(shapes, spec)
    pre = ImagePreprocess(image_size=shapes["image_size"])  # OpenAI's: bicubic short side, centre crop
    return FrozenVLM(model, openai_tokenizer(shapes["context_length"]), pre, {
        "backend": "openai-clip", "name": spec, "source": str(path), "activation": "quick_gelu",
        "weights_file": path.name, "weights_sha256": file_sha256(path)})


# --- open_clip ------------------------------------------------------------------------------------
VISION_MAPPED = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "patch_dropout",
                 "output_tokens"}
TEXT_MAPPED = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "output_tokens"}
TOP_MAPPED = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "cast_dtype", "init_logit_scale"}
FEATURES = {"attentional_pool": "attention pooling", "pool_type": "a pooling other than the class token / argmax",
            "ls_init_value": "layer scale", "no_ln_pre": "no pre-LayerNorm", "final_ln_after_pool":
            "LayerNorm after pooling", "timm_model_name": "a timm image tower", "hf_model_name":
            "a Hugging Face text tower", "hf_tokenizer_name": "a Hugging Face tokenizer", "no_causal_mask":
            "a non-causal text tower", "proj_bias": "a projection bias", "proj_type": "a non-linear text projection",
            "embed_cls": "a text class token", "init_logit_bias": "a sigmoid-loss logit bias (SigLIP)",
            "multimodal_cfg": "a caption decoder (CoCa)", "pos_embed_type": "non-learned position embeddings"}


def check_open_clip_config(arch: str, cfg: dict[str, Any]) -> None:
    """Refuse, in one line, any config field whose value moves the model away from transformers' CLIP."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    found: list[str] = []
    for key in sorted(set(cfg) - TOP_MAPPED):
        found.append(f"{key} ({FEATURES.get(key, 'not in transformers CLIP')})")
    for part, cls, mapped in (("vision_cfg", CLIPVisionCfg, VISION_MAPPED), ("text_cfg", CLIPTextCfg, TEXT_MAPPED)):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key, value in sorted((cfg.get(part) or {}).items()):
            if key in mapped or (key in defaults and defaults[key] == value) or value in (None, {}, False):
                continue
            found.append(f"{part}.{key}={value!r} ({FEATURES.get(key, 'not in transformers CLIP')})")
    if isinstance((cfg.get("vision_cfg") or {}).get("layers"), list | tuple):
        found.append("a ModifiedResNet image tower")
    if found:
        raise BackboneError(f"open-clip architecture {arch} differs from transformers' CLIPModel: {'; '.join(found)}; "
                            "supported are class-token ViT CLIPs such as ViT-B-32, ViT-B-16, ViT-L-14")


def hub_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """(repo id, file names to look for, safetensors first), as open_clip resolves a pretrained hf_hub entry."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    names = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
    if filename != HF_WEIGHTS_NAME and filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return repo, [*names, filename]


def cached_weights(pcfg: dict[str, Any]) -> Path | None:
    """The local file of a pretrained tag (HF hub cache or open_clip's URL cache), without any network."""
    from huggingface_hub import try_to_load_from_cache

    if pcfg.get("hf_hub"):
        repo, names = hub_candidates(pcfg["hf_hub"])
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir())
            if isinstance(found, str):
                return Path(found)
    if pcfg.get("url"):
        path = URL_CACHE.expanduser() / os.path.basename(pcfg["url"])
        if path.is_file():
            return path
    return None


def resolve_tag(arch: str, tag: str, allow_download: bool) -> tuple[Path, dict[str, Any]]:
    open_clip = require_open_clip(f"open-clip:{arch}/{tag}")
    pcfg = open_clip.get_pretrained_cfg(arch, tag)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise BackboneError(f"open_clip has no pretrained tag '{tag}' for {arch}; known: "
                            f"{', '.join(tags) or 'none'} (`xbench backbones` lists them all)")
    path = cached_weights(pcfg)
    if path is None and not allow_download:
        where = pcfg.get("hf_hub") or pcfg.get("url")
        raise BackboneError(f"weights of open-clip:{arch}/{tag} are not in the local cache ({hub_cache_dir()} or "
                            f"{URL_CACHE}) and downloads are off; add --allow-download, or fetch {where} on a "
                            f"machine with internet and pass open-clip:{arch}:/path/to/file")
    if path is None:
        hub = {"cache_dir": str(hub_cache_dir())} if pcfg.get("hf_hub") else {}
        try:
            path = Path(open_clip.download_pretrained(pcfg, **hub))
        except (OSError, RuntimeError) as exc:
            raise BackboneError(f"cannot download open-clip:{arch}/{tag}: {str(exc).splitlines()[0]}") from None
    return path, pcfg


def parse_open_clip_arg(arg: str) -> tuple[str, str | None, str | None]:
    """ARCH/TAG -> (arch, tag, None); ARCH:/path -> (arch, None, path)."""
    arch, colon, path = arg.partition(":")
    if colon:
        return arch, None, path
    arch, slash, tag = arg.partition("/")
    if not slash or not arch or not tag:
        raise BackboneError(f"bad open-clip spec 'open-clip:{arg}'; write open-clip:ARCH/TAG (e.g. "
                            "open-clip:ViT-B-32/laion2b_s34b_b79k) or open-clip:ARCH:/path/to/checkpoint")
    return arch, tag, None


def open_clip_preprocess(image_size: int, pcfg: dict[str, Any]) -> ImagePreprocess:
    return ImagePreprocess(image_size=image_size, mean=tuple(pcfg.get("mean", CLIP_MEAN)),
                           std=tuple(pcfg.get("std", CLIP_STD)), interpolation=pcfg.get("interpolation", "bicubic"),
                           resize_mode=pcfg.get("resize_mode", "shortest"))


@BACKENDS.register("open-clip")
def open_clip_backbone(arg: str, allow_download: bool = False) -> FrozenVLM:
    spec = f"open-clip:{arg}"
    arch, tag, file_arg = parse_open_clip_arg(arg)
    open_clip = require_open_clip(spec)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise BackboneError(f"open_clip knows no architecture '{arch}' (from '{spec}'); `xbench backbones` lists "
                            "the known ones")
    check_open_clip_config(arch, cfg)
    if tag is not None:
        path, pcfg = resolve_tag(arch, tag, allow_download)
    else:
        path, pcfg = _file(file_arg, spec), {}
    quick_gelu = bool(cfg.get("quick_gelu") or pcfg.get("quick_gelu"))
    vc, tc = cfg["vision_cfg"], cfg["text_cfg"]
    heads = (vc.get("width", 768) // vc.get("head_width", 64), tc.get("heads", 8))
    model, shapes = build_clip_model(read_state_dict(path), spec, quick_gelu=quick_gelu, heads=heads)
    _check_vocab(shapes, spec)
    expected = dict(embed_dim=cfg["embed_dim"], vision_width=vc.get("width", 768), text_width=tc.get("width", 512),
                    patch_size=vc.get("patch_size", 16), vision_layers=vc.get("layers", 12),
                    text_layers=tc.get("layers", 12), context_length=tc.get("context_length", 77))
    wrong = [f"{k} {shapes[k]} (config {v})" for k, v in expected.items() if shapes[k] != v]
    if wrong:
        raise BackboneError(f"{path} does not fit open_clip architecture {arch}: {', '.join(wrong)}")
    pre = open_clip_preprocess(shapes["image_size"], pcfg)
    record = {"backend": "open-clip", "name": spec, "architecture": arch, "activation":
              "quick_gelu" if quick_gelu else "gelu", "weights_file": path.name, "weights_sha256": file_sha256(path)}
    record.update({"tag": tag, "source": pcfg.get("hf_hub") or pcfg.get("url")} if tag else {"source": str(path)})
    return FrozenVLM(model, openai_tokenizer(shapes["context_length"]), pre, record)
