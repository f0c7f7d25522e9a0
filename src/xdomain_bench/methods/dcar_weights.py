"""DCAR caption layout and token re-weighting (METHODS.md §5.3, steps 2-3; not published; our choice).

A caption is tokenised once and laid out twice from the same (truncated) caption tokens:
- `raw`:      [SOS, caption, EOT, pad...]       -> frozen per-token features u_j (H7)
- `prompted`: [SOS, X*k, caption, EOT, pad...]  -> the trained text path (H6 placeholders, H8 weights)
Captions are truncated so that EOT survives in the prompted layout, so both layouts hold exactly the
same caption tokens and the weights of `raw` shift by k positions into `prompted`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..vlm import FrozenVLM, TokenBatch

# a standalone "x" tokenises to the placeholder id: write it as the multiplication sign instead
_LONE_X = re.compile(r"(?<![A-Za-z])[xX](?![A-Za-z])")


@dataclass
class CaptionTokens:
    raw: TokenBatch  # (N, L_raw)
    prompted: TokenBatch  # (N, L_raw + k)
    caption_mask: Tensor  # (N, L_raw) True at caption tokens of `raw` (not SOS / EOT / padding)
    n_ctx: int


def sanitize_caption(text: str) -> str:
    """Replace a stand-alone letter x (which would read as a placeholder, H6) by '×'."""
    return _LONE_X.sub("×", text)


def caption_tokens(vlm: FrozenVLM, texts: Sequence[str], n_ctx: int) -> CaptionTokens:
    """Both layouts of `texts`; caption tokens are cut to context_length - 2 - n_ctx."""
    tok = vlm.tokenizer
    ctx_len = vlm.sizes.context_length
    room = ctx_len - 2 - n_ctx
    if room < 0:
        raise ConfigError(f"{n_ctx} context vectors do not fit the context length {ctx_len}")
    sos = int(tok.bos_token_id)
    pad = int(tok.pad_token_id) if tok.pad_token_id is not None else vlm.eot_id
    bodies = []
    for text in texts:
        ids = tok(sanitize_caption(text), add_special_tokens=False, truncation=True, max_length=ctx_len)["input_ids"]
        ids = [int(i) for i in ids[:room]]
        if vlm.placeholder_id in ids:
            raise ConfigError(f"caption {text!r} still contains the placeholder token after sanitising")
        bodies.append(ids)
    n = len(bodies)
    length = max((len(b) for b in bodies), default=0) + 2
    raw = torch.full((n, length), pad, dtype=torch.long)
    prompted = torch.full((n, length + n_ctx), pad, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.bool)
    eot = torch.zeros(n, dtype=torch.long)
    for i, body in enumerate(bodies):
        m = len(body)
        raw[i, 0], prompted[i, 0] = sos, sos
        prompted[i, 1:1 + n_ctx] = vlm.placeholder_id
        if m:
            raw[i, 1:1 + m] = torch.tensor(body)
            prompted[i, 1 + n_ctx:1 + n_ctx + m] = torch.tensor(body)
        raw[i, 1 + m] = vlm.eot_id
        prompted[i, 1 + n_ctx + m] = vlm.eot_id
        mask[i, 1:1 + m] = True
        eot[i] = 1 + m
    return CaptionTokens(TokenBatch(raw, eot), TokenBatch(prompted, eot + n_ctx), mask, n_ctx)


def token_weights(token_feats: Tensor, caption_mask: Tensor, image_emb: Tensor, blank_emb: Tensor,
                  clamp: tuple[float, float] = (0.5, 2.0)) -> Tensor:
    """w_j = |cos(u_j, f) - cos(u_j, f_blank)| on caption tokens, divided by its mean over the caption's
    tokens, then clamped; every other position (SOS, EOT, padding) gets 1. Shapes: token_feats (N, L, E),
    caption_mask (N, L), image_emb (N, E) or (E,), blank_emb (E,). Returns (N, L) float32, no grad."""
    with torch.no_grad():
        u = F.normalize(token_feats.float(), dim=-1)
        f = F.normalize(image_emb.float(), dim=-1)
        if f.dim() == 1:
            f = f.unsqueeze(0).expand(u.shape[0], -1)
        fb = F.normalize(blank_emb.float().reshape(-1), dim=-1)
        diff = ((u * f.unsqueeze(1)).sum(-1) - u @ fb).abs()
        mask = caption_mask.to(diff.device)
        diff = torch.where(mask, diff, torch.zeros_like(diff))
        count = mask.sum(dim=1, keepdim=True).clamp_min(1)
        mean = diff.sum(dim=1, keepdim=True) / count
        # a caption whose tokens all score 0 has no preference: weight 1 everywhere
        w = torch.where(mean > 0, diff / mean.clamp_min(torch.finfo(diff.dtype).tiny), torch.ones_like(diff))
        w = w.clamp(*clamp)
        return torch.where(mask, w, torch.ones_like(w))


def shift_weights(raw_weights: Tensor, n_ctx: int) -> Tensor:
    """Weights of the `raw` layout moved into the `prompted` one: the k context slots after SOS get 1."""
    n = raw_weights.shape[0]
    ones = torch.ones(n, n_ctx, dtype=raw_weights.dtype, device=raw_weights.device)
    return torch.cat([raw_weights[:, :1], ones, raw_weights[:, 1:]], dim=1)


@torch.no_grad()
def blank_image_embedding(vlm: FrozenVLM) -> Tensor:
    """f^∅: the frozen embedding (E,) of an image at the normalisation mean (all-zero normalised pixels)."""
    weight = vlm.vision.embeddings.patch_embedding.weight
    size = vlm.sizes.image_size
    pixels = torch.zeros(1, 3, size, size, device=weight.device, dtype=weight.dtype)
    return vlm.frozen_image_features(pixels)[0].float()
