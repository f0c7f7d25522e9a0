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


def run_layers_shared_prefix(layers: Sequence[nn.Module], prefix: Tensor, suffix: Tensor) -> Tensor:
    """Causal blocks over sequences [prefix_g; suffix_{g,r}] with each group's prefix computed once.

    `prefix` (G, P, C) and `suffix` (G, R, S, C) hold embedded tokens (positions already added). The result,
    the suffix states (G, R, S, C) after the last block, equals running every full sequence through the
    blocks: with causal attention the prefix never sees the suffix, so its keys and values are shared."""
    g, r, s, c = suffix.shape
    p = prefix.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=suffix.device).triu(1)
    x_p, x_s = prefix, suffix.reshape(g, r * s, c)
    for layer in layers:
        attn = layer.self_attn
        heads = attn.num_heads
        d = c // heads
        h_p = layer.layer_norm1(x_p)
        k_p = attn.k_proj(h_p).view(g, p, heads, d).transpose(1, 2)  # (G, h, P, d)
        v_p = attn.v_proj(h_p).view(g, p, heads, d).transpose(1, 2)
        h_s = layer.layer_norm1(x_s)
        q, k, v = (proj(h_s).view(g, r, s, heads, d).transpose(2, 3) for proj in (attn.q_proj, attn.k_proj,
                                                                                 attn.v_proj))  # (G, R, h, S, d)
        scores_p = torch.einsum("grhsd,ghpd->grhsp", q, k_p) * attn.scale
        scores_s = (q @ k.transpose(-2, -1) * attn.scale).masked_fill(causal, float("-inf"))
        weights = torch.cat([scores_p, scores_s], dim=-1).softmax(dim=-1).to(v.dtype)
        out = torch.einsum("grhsp,ghpd->grhsd", weights[..., :p], v_p) + weights[..., p:] @ v
        x_s = x_s + attn.out_proj(out.transpose(2, 3).reshape(g, r * s, c))
        x_s = x_s + layer.mlp(layer.layer_norm2(x_s))
        x_p, _ = run_block(layer, x_p, causal=True)
    return x_s.view(g, r, s, c)
