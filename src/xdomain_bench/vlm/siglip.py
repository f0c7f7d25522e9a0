"""`hf-siglip:<hub id or directory>`: a transformers SiglipModel (SigLIP, fixed-resolution SigLIP2).

SigLIP differs from CLIP where methods hook in:
- no class token: the image embedding is the attention-pooling head (a learned probe attending to every
  token after `post_layernorm`); there is no image projection (`proj_v` is the identity);
- the text tower is bidirectional, always padded to its full context and pooled at the last position,
  then projected by a linear head with a bias;
- it is trained with a sigmoid loss (scale and bias); methods keep their own losses and use exp(scale).

Substitutes, so the hooks keep their meaning: readout "cls" is the pooling head (over prompts too);
prompts go first (`prepend`, there being no class token to follow) or after the patches; the CLS-to-patch
attention (H10) is the probe's attention over the patches. Methods whose parts are built around the class
token itself (its embedding, a token sequence assembled around it) are n/a on SigLIP, with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BackboneError, ConfigError
from .backends import BACKENDS
from .frozen import FrozenVLM, ImageOutput, TextOutput, TokenBatch, deep_prompt_slots
from .hf_clip import (
    WEIGHT_FILES,
    _from_pretrained,
    _looks_like_path,
    config_model_type,
    file_sha256,
    resolve_hub_snapshot,
)
from .preprocess import ImagePreprocess
from .towers import run_layers

NO_CLASS_TOKEN = "SigLIP has no class token (it pools with an attention head)"
# Methods that build on the class token itself: the reason their cells are n/a on SigLIP.
UNSUPPORTED = {
    "ucdr_adapter": f"{NO_CLASS_TOKEN}; UCDR-Adapter assembles its prompted sequence around the CLS token",
    "pros": f"{NO_CLASS_TOKEN}; ProS reads its prompts out through the CLS token and a CLS-less pass",
    "dcar": f"{NO_CLASS_TOKEN} and a bidirectional text tower; DCAR's token weights assume CLIP's causal "
            "SOT/EOT text layout",
    "dva": "DVA sizes and accounts its adapters against CLIP's image projection, which SigLIP lacks (its "
           "image embedding is the attention-pooling head)",
}
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json")


class SiglipVLM(FrozenVLM):
    """The frozen-VLM interface over a transformers SiglipModel."""

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess: ImagePreprocess, spec: dict[str, Any]) -> None:
        vc, tc = model.config.vision_config, model.config.text_config
        embed = getattr(tc, "projection_size", None) or tc.hidden_size
        if embed != vc.hidden_size or not getattr(vc, "vision_use_head", True):
            raise BackboneError("this SigLIP checkpoint's image and text embeddings differ in size (or it has no "
                                "pooling head); only dual-tower SiglipModels with a shared embedding are supported")
        super().__init__(model, tokenizer, preprocess, spec, embed_dim=embed)

    def unsupported_reason(self, method: str) -> str | None:
        return UNSUPPORTED.get(method)

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.detach().exp())

    def backbone_tensor(self, name: str) -> Tensor:
        """`proj_v` is the identity (W×W: SigLIP has no image projection); `proj_t` the text head's weight."""
        if name == "proj_v":
            return torch.eye(self.sizes.vision_width, dtype=self.vision.post_layernorm.weight.dtype)
        if name == "proj_t":
            return self.text.head.weight.t().detach().clone()
        if name == "cls_emb":
            raise ConfigError(f"backbone tensor 'cls_emb' does not exist: {NO_CLASS_TOKEN}")
        raise ConfigError(f"backbone tensor '{name}' is not exposed; choose one of ['proj_t', 'proj_v']")

    # --- images -------------------------------------------------------------------------------------
    def pool(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """The attention-pooling head on post-LN states (B, N, W) -> (B, W), and the probe's attention (B, N)."""
        head = self.vision.head
        probe = head.probe.expand(x.shape[0], -1, -1).to(x.dtype)
        h, weights = head.attention(probe, x, x, need_weights=need_weights)
        h = h + head.mlp(head.layernorm(h))
        return h[:, 0], (weights[:, 0] if weights is not None else None)

    def encode_image(self, pixels: Tensor, *, prompts: Tensor | None = None, prompt_position: str = "prepend",
                     deep_prompts: Tensor | None = None, readout: str | int = "cls", pre_proj: bool = False,
                     q_adapters: Sequence[nn.Module] | None = None, k_adapters: Sequence[nn.Module] | None = None,
                     proj_v: Tensor | None = None, cls_emb: Tensor | None = None,
                     return_tokens: bool = False, return_attention: bool = False) -> Tensor | ImageOutput:
        """As FrozenVLM.encode_image; `prepend` puts prompts first, readout "cls" is the pooling head."""
        if cls_emb is not None:
            raise ConfigError(f"cls_emb cannot be overridden: {NO_CLASS_TOKEN}")
        emb = self.vision.embeddings
        b = pixels.shape[0]
        patches = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        patches = patches + emb.position_embedding.weight.unsqueeze(0)
        n_prompt, first = 0, 0
        seq = [patches]
        if prompts is not None:
            if prompt_position not in ("prepend", "append"):
                raise ConfigError(f"prompt_position must be 'prepend' or 'append', not {prompt_position!r}")
            prompts = (prompts.unsqueeze(0).expand(b, -1, -1) if prompts.dim() == 2 else prompts).to(patches.dtype)
            n_prompt = prompts.shape[1]
            first = 0 if prompt_position == "prepend" else patches.shape[1]
            seq = [prompts, patches] if prompt_position == "prepend" else [patches, prompts]
        x = torch.cat(seq, dim=1)
        slots = deep_prompt_slots(x, first, n_prompt) if deep_prompts is not None else None
        x, _ = run_layers(self.vision.encoder.layers, x, slots=slots, deep=deep_prompts, q_adapters=q_adapters,
                          k_adapters=k_adapters)
        normed = self.vision.post_layernorm(x)
        if readout == "cls":
            out, weights = self.pool(normed, need_weights=return_attention)
        else:
            out, weights = normed[:, int(readout)], None
        if not pre_proj and proj_v is not None:
            out = out @ proj_v.to(out.dtype)
        if not (return_tokens or return_attention):
            return out
        grid_attn = None
        if return_attention:
            if weights is None:
                _, weights = self.pool(normed, need_weights=True)
            g = self.sizes.grid
            start = n_prompt if prompt_position == "prepend" else 0
            grid_attn = weights[:, start:start + g * g].reshape(b, g, g)
        return ImageOutput(out, x if return_tokens else None, grid_attn)

    # --- text ---------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Padded to the full context, as SigLIP was trained; `eot` is the pooled (last) position."""
        if isinstance(texts, str):
            texts = [texts]
        length = self.sizes.context_length
        ids = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=length,
                             return_tensors="pt")["input_ids"]
        return TokenBatch(ids, torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long))

    def encode_text(self, tokens: TokenBatch | Sequence[str], *, context: Tensor | None = None,
                    deep_context: Tensor | None = None, token_weights: Tensor | None = None,
                    proj_t: Tensor | None = None, return_tokens: bool = False, trim: bool = True
                    ) -> Tensor | TextOutput:
        """As FrozenVLM.encode_text, on the bidirectional tower (every position always runs; `trim` is moot).
        A `proj_t` override replaces the head's weight; its frozen bias stays."""
        if not isinstance(tokens, TokenBatch):
            tokens = self.tokenize(tokens)
        tokens = tokens.to(self.text.embeddings.token_embedding.weight.device)
        x, slots = self.text_inputs(tokens.ids, context, deep_context, token_weights)
        x, _ = run_layers(self.text.encoder.layers, x, slots=slots, deep=deep_context)
        x = self.text.final_layer_norm(x)
        head = self.text.head
        proj = (lambda t: t @ proj_t.to(t.dtype) + head.bias) if proj_t is not None else head
        rows = torch.arange(x.shape[0], device=x.device)
        out = proj(x[rows, tokens.eot])
        if not return_tokens:
            return out
        first_eos = (tokens.ids == self.eot_id).int().argmax(dim=1)
        mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) <= first_eos.unsqueeze(1)
        return TextOutput(out, proj(x), mask)

    def encode_text_product(self, tokens: TokenBatch | Sequence[str], contexts: Tensor) -> Tensor:
        """(G, m, T) contexts -> (G, N, E); no shared-prefix shortcut (the tower is bidirectional)."""
        return torch.stack([self.encode_text(tokens, context=c) for c in contexts])


def siglip_preprocess(root: Path, image_size: int) -> ImagePreprocess:
    """SigLIP's image processor: resize both sides to the model's size (no crop), mean/std 0.5 by default."""
    cfg: dict[str, Any] = {}
    path = root / "preprocessor_config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackboneError(f"{path}: not valid JSON ({exc}); restore the checkpoint's preprocessor config") from None
    interp = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(cfg.get("resample", 2)), "bilinear")
    return ImagePreprocess(image_size=image_size, mean=tuple(cfg.get("image_mean", (0.5, 0.5, 0.5))),
                           std=tuple(cfg.get("image_std", (0.5, 0.5, 0.5))), interpolation=interp,
                           resize_mode="squash")


def check_siglip_dir(root: Path, what: str) -> str:
    """The checkpoint's model_type, after naming every missing file."""
    if not root.is_dir():
        raise BackboneError(f"{what} not found: {root}; pass hf-siglip:/path/to/dir holding a SiglipModel saved "
                            "with save_pretrained, or a hub id")
    missing = [] if (root / "config.json").is_file() else ["config.json"]
    if not any((root / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((root / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (" + ", ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise BackboneError(f"{what} {root} lacks {', '.join(missing)}; save the model and its tokenizer into it")
    return config_model_type(root)


@BACKENDS.register("hf-siglip")
def hf_siglip(arg: str, allow_download: bool = False) -> FrozenVLM:
    from transformers import AutoTokenizer, SiglipModel

    if not arg:
        raise BackboneError("hf-siglip needs a hub id or a directory, e.g. hf-siglip:google/siglip-base-patch16-224")
    spec: dict[str, Any] = {"backend": "hf-siglip", "name": f"hf-siglip:{arg}"}
    if _looks_like_path(arg):
        root = Path(arg).expanduser().resolve()
        spec["source"] = str(root)
    else:
        root = resolve_hub_snapshot(arg, allow_download)
        spec.update(source=arg, snapshot=str(root), revision=root.name)
    model_type = check_siglip_dir(root, "checkpoint directory")
    if model_type != "siglip":
        raise BackboneError(f"{root} holds a '{model_type}' model, not a SiglipModel (model_type 'siglip'); "
                            "NaFlex SigLIP2 ('siglip2') embeds variable-size patch sequences, which the interface "
                            "does not support: use a fixed-resolution SigLIP2 checkpoint")
    try:
        model = _from_pretrained(SiglipModel, root).eval()
        tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackboneError(f"cannot load the SigLIP checkpoint in {root}: {reason}") from None
    pre = siglip_preprocess(root, model.config.vision_config.image_size)
    weights = next(root / f for f in WEIGHT_FILES if (root / f).is_file())
    spec.update(weights_file=weights.name, weights_sha256=file_sha256(weights),
                logit_bias=float(model.logit_bias.detach().reshape(-1)[0]))
    return SiglipVLM(model, tokenizer, pre, spec)
