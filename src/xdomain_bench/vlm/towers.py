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


def run_block_at(layer: nn.Module, x: Tensor, index: Tensor, *, causal: bool = False) -> Tensor:
    """One pre-LN CLIP block evaluated at a single token per row: (B, N, C) states, (B,) positions -> (B, C).

    Equal to `run_block(layer, x, causal=causal)[0][rows, index]`: every token still supplies its key and
    value, but only the token at `index` gets a query, the attention output projection and the MLP. With
    `causal` the token sees positions <= index, as in the full block."""
    attn = layer.self_attn
    b, n, c = x.shape
    heads = attn.num_heads
    rows = torch.arange(b, device=x.device)
    h = layer.layer_norm1(x)
    k, v = (proj(h).view(b, n, heads, c // heads).transpose(1, 2) for proj in (attn.k_proj, attn.v_proj))
    q = attn.q_proj(h[rows, index]).view(b, 1, heads, c // heads).transpose(1, 2)  # (B, h, 1, d)
    mask = None
    if causal:
        mask = (torch.arange(n, device=x.device).unsqueeze(0) <= index.unsqueeze(1)).view(b, 1, 1, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    y = x[rows, index] + attn.out_proj(out.reshape(b, c))
    return y + layer.mlp(layer.layer_norm2(y))


def run_layers(layers: Sequence[nn.Module], x: Tensor, *, causal: bool = False, slots: Tensor | None = None,
               deep: Tensor | None = None, q_adapters: Sequence[nn.Module] | None = None,
               k_adapters: Sequence[nn.Module] | None = None, attention_layer: int | None = None,
               pool_at: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Run blocks in order. `deep[j]` (shape (n, C) or (B, n, C)) overwrites the tokens at bool mask
    `slots` (B, N) before block j+1 (H4). Returns the output and, if asked, one block's attention.

    `pool_at` (B,) positions: only those tokens' final states are wanted, so the last block runs at them alone
    (`run_block_at`) and the output is (B, C); exact, because nothing after the last block reads the others."""
    attn_out = None
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        if deep is not None and slots is not None and 1 <= i <= deep.shape[-3]:
            x = overwrite_slots(x, slots, deep[..., i - 1, :, :])
        qa = q_adapters[i] if q_adapters is not None else None
        ka = k_adapters[i] if k_adapters is not None else None
        if pool_at is not None and i == last and qa is None and ka is None and attention_layer != i:
            return run_block_at(layer, x, pool_at, causal=causal), attn_out
        x, w = run_block(layer, x, causal=causal, q_adapter=qa, k_adapter=ka, need_weights=(i == attention_layer))
        if w is not None:
            attn_out = w
    if pool_at is not None:
        x = x[torch.arange(x.shape[0], device=x.device), pool_at]
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
    """Causal blocks over sequences [prefix_g; suffix_{g,r}] with each group's prefix computed once; returns the
    final states of every suffix's last token, (G, R, C).

    `prefix` (G, P, C) and `suffix` (G, R, S, C), or (R, S, C) when every group has the same suffixes, hold
    embedded tokens (positions added). The result equals running every full sequence through the blocks and
    reading its last token, with less work, all of it exact:
    - causal attention: the prefix never sees the suffix, so its keys and values are computed once per group;
    - a shared suffix is embedded, normalised and projected to Q/K/V once for all groups in the first block
      (until the first attention its tokens do not depend on the group);
    - in the last block only the last token gets a query, the output projection and the MLP (the others only
      supply keys and values), and the prefix's own last block, whose output nothing reads, is skipped."""
    g, p, c = prefix.shape
    r, s = suffix.shape[-3], suffix.shape[-2]
    shared = suffix.dim() == 3
    mask = torch.ones(s, s, dtype=torch.bool, device=suffix.device).triu(1)
    x_p = prefix
    x_s = suffix.reshape(r * s, c) if shared else suffix.reshape(g, r * s, c)
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        heads = attn.num_heads
        d = c // heads
        lead = (g,) if x_s.dim() == 3 else ()  # a shared suffix is (R*S, C) until the first attention
        h_p = layer.layer_norm1(x_p)
        k_p = attn.k_proj(h_p).view(g, p, heads, d).transpose(1, 2)  # (G, h, P, d)
        v_p = attn.v_proj(h_p).view(g, p, heads, d).transpose(1, 2)
        h_s = layer.layer_norm1(x_s)
        k, v = (proj(h_s).view(*lead, r, s, heads, d).transpose(-3, -2) for proj in (attn.k_proj, attn.v_proj))
        if i == last:  # the last token only: it sees the whole suffix, no mask
            q = attn.q_proj(h_s.view(*lead, r, s, c)[..., -1, :]).view(*lead, r, heads, 1, d)
            scores_s = q @ k.transpose(-2, -1) * attn.scale
        else:
            q = attn.q_proj(h_s).view(*lead, r, s, heads, d).transpose(-3, -2)  # (.., R, h, S, d)
            scores_s = (q @ k.transpose(-2, -1) * attn.scale).masked_fill(mask, float("-inf"))
        sub = "grhsd" if lead else "rhsd"
        scores_p = torch.einsum(f"{sub},ghpd->grhsp", q, k_p) * attn.scale
        scores_s = scores_s.expand(g, *scores_s.shape[-4:])
        weights = torch.cat([scores_p, scores_s], dim=-1).softmax(dim=-1).to(v_p.dtype)
        out = torch.einsum("grhsp,ghpd->grhsd", weights[..., :p], v_p) + weights[..., p:] @ v
        n_q = out.shape[-2]
        out = attn.out_proj(out.transpose(2, 3).reshape(g, r * n_q, c))
        if i == last:
            y = x_s.view(*lead, r, s, c)[..., -1, :] + out  # (G, R, C)
            return y + layer.mlp(layer.layer_norm2(y))
        x_s = x_s + out  # (G, R*S, C) from here on
        x_s = x_s + layer.mlp(layer.layer_norm2(x_s))
        x_p, _ = run_block(layer, x_p, causal=True)
    raise ValueError("run_layers_shared_prefix needs at least one block")
