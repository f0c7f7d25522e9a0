"""The shared frozen-VLM interface (ARCHITECTURE.md, METHODS.md §1.2 hooks H1–H13).

`FrozenVLM` wraps a CLIP-style checkpoint. Every backbone tensor is frozen and the backbone stays in
eval mode. Methods pass their trainable pieces in (prompts, context vectors, adapters, overrides of
`proj_v` / `cls_emb` / `proj_t`), so the backbone itself is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .preprocess import ImagePreprocess
from .sizes import VLMSizes
from .towers import overwrite_slots, run_layers, run_layers_shared_prefix

PLACEHOLDER = "X"


@dataclass
class TokenBatch:
    ids: Tensor  # (N, L) token ids, EOT present in every row
    eot: Tensor  # (N,) position of the end-of-text token

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(self.ids.to(device), self.eot.to(device))


@dataclass
class ImageOutput:
    embedding: Tensor  # (B, E) or (B, W) with pre_proj
    tokens: Tensor | None = None  # (B, N, W) final states before ln_post
    attention: Tensor | None = None  # (B, G, G) CLS-to-patch attention of the last block


@dataclass
class TextOutput:
    embedding: Tensor  # (N, E)
    token_features: Tensor | None = None  # (N, L, E) per-token projected features (H7)
    mask: Tensor | None = None  # (N, L) True for real tokens up to and including EOT


class FrozenVLM(nn.Module):
    """A frozen CLIP. `clip` is a transformers CLIPModel (or one with the same submodule names)."""

    def __init__(self, clip: nn.Module, tokenizer: Any, preprocess: ImagePreprocess, spec: dict[str, Any],
                 embed_dim: int | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.spec = dict(spec)
        self.vision = clip.vision_model
        self.text = clip.text_model
        vc, tc = clip.config.vision_config, clip.config.text_config
        self.sizes = VLMSizes(
            vision_width=vc.hidden_size, text_width=tc.hidden_size,
            embed_dim=embed_dim if embed_dim is not None else clip.config.projection_dim,
            vision_layers=vc.num_hidden_layers, text_layers=tc.num_hidden_layers,
            vision_heads=vc.num_attention_heads, text_heads=tc.num_attention_heads,
            patch_size=vc.patch_size, image_size=vc.image_size, context_length=tc.max_position_embeddings,
        )
        self.placeholder_id = single_token_id(tokenizer, PLACEHOLDER)
        self.eot_id = int(tokenizer.eos_token_id)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    # --- H1: sizes, scale, preprocessing ------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        """s_clip = exp(logit_scale) of the checkpoint (frozen)."""
        return float(self.clip.logit_scale.detach().exp())

    def train(self, mode: bool = True) -> FrozenVLM:
        """The backbone stays in eval mode (dropout off) whatever the method does."""
        return super().train(False)

    def unsupported_reason(self, method: str) -> str | None:
        """Why `method` cannot run on this backbone (its cell is then n/a with the reason), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        return {**self.spec, "sizes": self.sizes.to_dict(), "preprocess": self.preprocess.to_dict()}

    # --- H13: tensors a method may copy and train ---------------------------------------------------
    def backbone_tensor(self, name: str) -> Tensor:
        """A detached copy of `proj_v` (W×E), `proj_t` (T×E) or `cls_emb` (W), to initialise a trainable copy."""
        tensors = {
            "proj_v": lambda: self.clip.visual_projection.weight.t(),
            "proj_t": lambda: self.clip.text_projection.weight.t(),
            "cls_emb": lambda: self.vision.embeddings.class_embedding,
        }
        if name not in tensors:
            raise ConfigError(f"backbone tensor '{name}' is not exposed; choose one of {sorted(tensors)}")
        return tensors[name]().detach().clone()

    # --- images (H2–H5, H9–H11) ---------------------------------------------------------------------
    def encode_image(self, pixels: Tensor, *, prompts: Tensor | None = None, prompt_position: str = "prepend",
                     deep_prompts: Tensor | None = None, readout: str | int = "cls", pre_proj: bool = False,
                     q_adapters: Sequence[nn.Module] | None = None, k_adapters: Sequence[nn.Module] | None = None,
                     proj_v: Tensor | None = None, cls_emb: Tensor | None = None,
                     return_tokens: bool = False, return_attention: bool = False) -> Tensor | ImageOutput:
        """Image embedding. Prompts ((n, W) or (B, n, W)) go right after CLS (`prepend`, H3) or after the
        patches (`append`), with no positional embedding; `deep_prompts` ((J-1, n, W) or (B, J-1, n, W))
        overwrite them before blocks 1..J-1 (H4). `readout` is `cls` or a token index (H5)."""
        emb = self.vision.embeddings
        b = pixels.shape[0]
        patches = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        pos = emb.position_embedding.weight
        patches = patches + pos[1:].unsqueeze(0)
        cls = (cls_emb if cls_emb is not None else emb.class_embedding) + pos[0]
        seq = [cls.expand(b, 1, -1).to(patches.dtype)]
        n_prompt = 0
        if prompts is not None:
            if prompts.dim() == 2:
                prompts = prompts.unsqueeze(0).expand(b, -1, -1)
            n_prompt = prompts.shape[1]
            prompts = prompts.to(patches.dtype)
        if prompts is not None and prompt_position == "prepend":
            seq += [prompts, patches]
            first = 1
        elif prompts is not None and prompt_position == "append":
            seq += [patches, prompts]
            first = 1 + patches.shape[1]
        elif prompts is None:
            seq += [patches]
            first = 0
        else:
            raise ConfigError(f"prompt_position must be 'prepend' or 'append', not {prompt_position!r}")
        x = self.vision.pre_layrnorm(torch.cat(seq, dim=1))
        slots = deep_prompt_slots(x, first, n_prompt) if deep_prompts is not None else None
        layers = self.vision.encoder.layers
        x, attn = run_layers(layers, x, slots=slots, deep=deep_prompts, q_adapters=q_adapters,
                             k_adapters=k_adapters, attention_layer=len(layers) - 1 if return_attention else None)
        index = 0 if readout == "cls" else int(readout)
        out = self.vision.post_layernorm(x[:, index])
        if not pre_proj:
            out = out @ proj_v.to(out.dtype) if proj_v is not None else self.clip.visual_projection(out)
        if not (return_tokens or return_attention):
            return out
        grid_attn = None
        if attn is not None:
            g = self.sizes.grid
            patch_start = 1 + (n_prompt if prompt_position == "prepend" else 0)
            cls_to_patch = attn.mean(dim=1)[:, 0, patch_start:patch_start + g * g]
            grid_attn = cls_to_patch.reshape(b, g, g)
        return ImageOutput(out, x if return_tokens else None, grid_attn)

    @torch.no_grad()
    def frozen_image_features(self, pixels: Tensor, pre_proj: bool = False) -> Tensor:
        """H11: the plain encoder (no prompts, no adapters) under no_grad, sharing the same weights."""
        return self.encode_image(pixels, pre_proj=pre_proj)

    @torch.no_grad()
    def class_attention_map(self, pixels: Tensor) -> Tensor:
        """H10: CLS-to-patch attention of the last vision block, averaged over heads, (B, G, G)."""
        return self.encode_image(pixels, return_attention=True).attention

    # --- text (H6–H8) -------------------------------------------------------------------------------
    def placeholder_slots(self, ids: Tensor, m: int) -> Tensor:
        """(N, L) bool mask of the placeholder tokens; every text must hold exactly m of them."""
        slots = ids == self.placeholder_id
        counts = slots.sum(dim=1)
        if not bool((counts == m).all()):
            raise ConfigError(f"every text needs exactly {m} '{PLACEHOLDER}' placeholders; found {counts.tolist()}")
        return slots

    def text_inputs(self, ids: Tensor, context: Tensor | None, deep_context: Tensor | None,
                    token_weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Token embeddings with the context at the placeholders (H6), weights (H8) and positions added, and the
        placeholder mask (None without context)."""
        x = self.text.embeddings.token_embedding(ids)
        slots = None
        if context is not None or deep_context is not None:
            slots = self.placeholder_slots(ids, (context if context is not None else deep_context).shape[-2])
        if context is not None:
            x = overwrite_slots(x, slots, context)
        if token_weights is not None:
            x = x * token_weights.to(x.dtype).unsqueeze(-1)
        return x + self.text.embeddings.position_embedding.weight[:x.shape[1]].unsqueeze(0), slots

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenise, truncating so that EOT survives within the context length; pad to the longest."""
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.sizes.context_length,
                             return_tensors="pt")
        ids = enc["input_ids"]
        is_eot = ids == self.eot_id
        eot = is_eot.int().argmax(dim=1)  # first EOT by id (H6), not argmax of ids
        return TokenBatch(ids, eot)

    def encode_text(self, tokens: TokenBatch | Sequence[str], *, context: Tensor | None = None,
                    deep_context: Tensor | None = None, token_weights: Tensor | None = None,
                    proj_t: Tensor | None = None, return_tokens: bool = False, trim: bool = True
                    ) -> Tensor | TextOutput:
        """Text embedding pooled at EOT. `context` ((m, T) or (N, m, T)) replaces the run of m placeholder
        tokens (H6); `deep_context` ((J-1, m, T) or (N, J-1, m, T)) overwrites them per layer; `token_weights`
        (N, L) scale the token embeddings before positions are added (H8).

        The tower is causal, so the pooled feature depends only on tokens up to EOT: unless per-token outputs
        are asked for (`return_tokens`, whose (N, L, E) shape and padded positions are part of H7), the batch
        is cut to its last EOT position and the last block runs at the EOT tokens only. Both are exact (the
        placeholders and deep-prompt slots always precede EOT); `trim=False` runs every position through every
        block, the reference the tests compare against."""
        if not isinstance(tokens, TokenBatch):
            tokens = self.tokenize(tokens)
        device = self.text.embeddings.token_embedding.weight.device
        tokens = tokens.to(device)
        pooled_only = trim and not return_tokens
        if pooled_only and tokens.ids.shape[1] > int(tokens.eot.max()) + 1:
            length = int(tokens.eot.max()) + 1
            tokens = TokenBatch(tokens.ids[:, :length], tokens.eot)
            token_weights = token_weights[:, :length] if token_weights is not None else None
        x, slots = self.text_inputs(tokens.ids, context, deep_context, token_weights)
        length = x.shape[1]
        proj = (lambda t: t @ proj_t.to(t.dtype)) if proj_t is not None else self.clip.text_projection
        if pooled_only:  # the last block at EOT only: (N, T)
            pooled, _ = run_layers(self.text.encoder.layers, x, causal=True, slots=slots, deep=deep_context,
                                   pool_at=tokens.eot)
            return proj(self.text.final_layer_norm(pooled))
        x, _ = run_layers(self.text.encoder.layers, x, causal=True, slots=slots, deep=deep_context)
        x = self.text.final_layer_norm(x)
        rows = torch.arange(x.shape[0], device=x.device)
        out = proj(x[rows, tokens.eot])
        if not return_tokens:
            return out
        mask = torch.arange(length, device=x.device).unsqueeze(0) <= tokens.eot.unsqueeze(1)
        return TextOutput(out, proj(x), mask)

    def encode_text_product(self, tokens: TokenBatch | Sequence[str], contexts: Tensor) -> Tensor:
        """Every text under every context: (G, m, T) contexts -> (G, N, E), equal to
        `encode_text(tokens, context=contexts[g])` for each g (H6). The token prefix that all texts share,
        placeholder run included, is encoded once per context (the text tower is causal), so only the
        per-text suffixes cost G x N sequences (bucketed by length, so without padding). Falls back to the plain
        path when no such prefix exists."""
        if not isinstance(tokens, TokenBatch):
            tokens = self.tokenize(tokens)
        device = self.text.embeddings.token_embedding.weight.device
        tokens = tokens.to(device)
        ids, eot = tokens.ids, tokens.eot
        g, m = contexts.shape[0], contexts.shape[-2]
        slots = self.placeholder_slots(ids, m)
        shared = int((ids == ids[:1]).all(dim=0).int().cumprod(dim=0).sum())
        p = min(shared, int(eot.min()))
        if m == 0 or int(slots[0].nonzero().max()) >= p:
            return torch.stack([self.encode_text(tokens, context=c) for c in contexts])
        emb = self.text.embeddings.token_embedding(ids[:, :int(eot.max()) + 1])
        pos = self.text.embeddings.position_embedding.weight[:emb.shape[1]]
        prefix = overwrite_slots(emb[:1, :p].expand(g, p, -1), slots[:1, :p].expand(g, p), contexts) + pos[:p]
        parts, order = [], []
        for end in torch.unique(eot).tolist():  # texts bucketed by EOT position: no padded suffix tokens
            rows = (eot == end).nonzero(as_tuple=True)[0]
            suffix = emb[rows, p:end + 1] + pos[p:end + 1]  # (R, S, T), the same under every context
            x = run_layers_shared_prefix(self.text.encoder.layers, prefix, suffix)  # EOT states, (G, R, T)
            parts.append(self.text.final_layer_norm(x))
            order.append(rows)
        pooled = torch.cat(parts, dim=1)[:, torch.argsort(torch.cat(order))]  # (G, N, T), input order
        return self.clip.text_projection(pooled)


def single_token_id(tokenizer, word: str) -> int:
    """The id of `word` without special tokens; an error unless the tokenizer spells it as one token."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConfigError(f"placeholder {word!r} is not a single token for this tokenizer")
    return int(ids[0])


def deep_prompt_slots(x: Tensor, first: int, n_prompt: int) -> Tensor:
    """(B, N) mask of the prompt tokens (positions first..first+n_prompt) that deep prompts overwrite per layer."""
    if n_prompt == 0:
        raise ConfigError("deep_prompts need layer-0 prompts to define their slots")
    slots = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    slots[:, first:first + n_prompt] = True
    return slots
