"""Transformer blocks run from a CLIP checkpoint's own submodules, with the hooks methods need.

We drive the backbone's layers ourselves (rather than call its forward) so that prompts, per-layer
prompt overwrites, Q/K adapters and attention read-outs are possible without touching its weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def run_block(layer: nn.Module, x: Tensor, *, causal: bool = False, q_adapter: nn.Module | None = None,
              k_adapter: nn.Module | None = None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """One pre-LN CLIP block. Adapter outputs are added to the frozen Q / K projections (H9)."""
    attn = layer.self_attn
    h = layer.layer_norm1(x)
    q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
    if q_adapter is not None:
        q = q + q_adapter(h)
    if k_adapter is not None:
        k = k + k_adapter(h)
    b, n, c = q.shape
    heads = attn.num_heads
    q, k, v = (t.view(b, n, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    weights = None
    if need_weights:
        scores = (q @ k.transpose(-2, -1)) * attn.scale
        if causal:
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        out = weights @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = attn.out_proj(out.transpose(1, 2).reshape(b, n, c))
    x = x + out
    x = x + layer.mlp(layer.layer_norm2(x))
    return x, weights


def run_layers(layers: Sequence[nn.Module], x: Tensor, *, causal: bool = False, slots: Tensor | None = None,
               deep: Tensor | None = None, q_adapters: Sequence[nn.Module] | None = None,
               k_adapters: Sequence[nn.Module] | None = None, attention_layer: int | None = None
               ) -> tuple[Tensor, Tensor | None]:
    """Run blocks in order. `deep[j]` (shape (n, C) or (B, n, C)) overwrites the tokens at bool mask
    `slots` (B, N) before block j+1 (H4). Returns the output and, if asked, one block's attention."""
    attn_out = None
    for i, layer in enumerate(layers):
        if deep is not None and slots is not None and 1 <= i <= deep.shape[-3]:
            x = overwrite_slots(x, slots, deep[..., i - 1, :, :])
        qa = q_adapters[i] if q_adapters is not None else None
        ka = k_adapters[i] if k_adapters is not None else None
        x, w = run_block(layer, x, causal=causal, q_adapter=qa, k_adapter=ka, need_weights=(i == attention_layer))
        if w is not None:
            attn_out = w
    return x, attn_out


def overwrite_slots(x: Tensor, slots: Tensor, values: Tensor) -> Tensor:
    """Replace the tokens at `slots` (B, N bool, n True per row) with `values` ((n, C) or (B, n, C))."""
    b = x.shape[0]
    n = int(slots[0].sum())
    if values.dim() == 2:
        values = values.unsqueeze(0).expand(b, n, values.shape[-1])
    x = x.clone()
    x[slots] = values.reshape(b * n, -1).to(x.dtype)
    return x
