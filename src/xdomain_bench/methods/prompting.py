"""Shared prompt machinery: VPT init, learned text context at a placeholder run, prompted image passes.

Used by UCDR-Adapter, ProS and the prompt-learning baselines (METHODS.md §1.6, §2). Every size comes
from the backbone (`vlm.sizes`). Helpers that assemble the visual token sequence themselves (token
dropout over the whole sequence, a CLS-less pass) reproduce `FrozenVLM.encode_image` step by step;
a test checks that they agree with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..vlm import FrozenVLM, TokenBatch, VLMSizes
from ..vlm.frozen import PLACEHOLDER
from ..vlm.towers import run_layers
from .text import clean_class_name

# a standalone x / X (not inside a word) tokenises to the placeholder id; such words are rewritten
_PLACEHOLDER_WORD = re.compile(r"(?<![^\W\d_])[xX](?![^\W\d_])")


# --- visual prompt initialisation ---------------------------------------------------------------
def vpt_bound(sizes: VLMSizes) -> float:
    """VPT's uniform bound sqrt(6 / (3·P² + W)) (0.0625 for P=16, W=768)."""
    return math.sqrt(6.0 / (3 * sizes.patch_size**2 + sizes.vision_width))


def vpt_uniform(rows: int, sizes: VLMSizes) -> Tensor:
    """(rows, W) tensor drawn uniformly from ±vpt_bound (VPT / ProS / UCDR-Adapter prompt init)."""
    bound = vpt_bound(sizes)
    return torch.empty(rows, sizes.vision_width).uniform_(-bound, bound)


def parse_readout(value: str | int) -> str | int:
    """Card value -> `encode_image` readout: "cls" or an integer token index (H5)."""
    if isinstance(value, str) and value.lower() == "cls":
        return "cls"
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"readout must be 'cls' or a token index, not {value!r}") from None


# --- learned text context (H6) --------------------------------------------------------------------
def sanitize_placeholder(text: str) -> str:
    """Rewrite standalone 'x' words (e.g. '1920 x 1080') so that they never count as placeholders."""
    return _PLACEHOLDER_WORD.sub("×", text)


class ContextText(nn.Module):
    """m learned context vectors (N(0, std), T-dim) substituted at the run of m placeholder tokens.

    `class_template` holds `{class}` and `{ctx}`; `caption_template` holds `{text}` and `{ctx}`.
    Token batches are cached per text list, so class prompts are tokenised once.
    """

    def __init__(
        self,
        text_width: int,
        n_ctx: int,
        class_template: str,
        caption_template: str = "{ctx} {text}",
        std: float = 0.02,
    ) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be at least 1, not {n_ctx}")
        for tpl, field in ((class_template, "{class}"), (caption_template, "{text}")):
            if "{ctx}" not in tpl or field not in tpl:
                raise ConfigError(f"template {tpl!r} needs both '{{ctx}}' and '{field}'")
        self.ctx = nn.Parameter(torch.randn(n_ctx, text_width) * std)
        self.class_template = class_template
        self.caption_template = caption_template
        self._tokens: dict[tuple[str, ...], TokenBatch] = {}

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def _fill(self, template: str, key: str, value: str) -> str:
        run = " ".join([PLACEHOLDER] * self.n_ctx)
        return template.replace(key, sanitize_placeholder(value)).replace("{ctx}", run)

    def class_texts(self, class_names: Sequence[str]) -> list[str]:
        return [self._fill(self.class_template, "{class}", clean_class_name(c)) for c in class_names]

    def caption_texts(self, captions: Sequence[str]) -> list[str]:
        return [self._fill(self.caption_template, "{text}", c) for c in captions]

    def tokens(self, vlm: FrozenVLM, texts: Sequence[str]) -> TokenBatch:
        key = tuple(texts)
        if key not in self._tokens:
            if len(self._tokens) > 64:  # caption batches differ every step: keep the cache small
                self._tokens.clear()
            self._tokens[key] = vlm.tokenize(list(texts))
        return self._tokens[key]

    def encode(
        self, vlm: FrozenVLM, texts: Sequence[str], proj_t: Tensor | None = None, batch_size: int = 512
    ) -> Tensor:
        """(N, E) features, not normalised, of filled templates (gradient flows into ctx / proj_t)."""
        parts = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            parts.append(vlm.encode_text(self.tokens(vlm, chunk), context=self.ctx, proj_t=proj_t).float())
        return torch.cat(parts) if parts else torch.zeros(0, vlm.sizes.embed_dim, device=self.ctx.device)

    def encode_classes(
        self, vlm: FrozenVLM, class_names: Sequence[str], proj_t: Tensor | None = None
    ) -> Tensor:
        return self.encode(vlm, self.class_texts(class_names), proj_t)

    def encode_captions(
        self, vlm: FrozenVLM, captions: Sequence[str], proj_t: Tensor | None = None
    ) -> Tensor:
        return self.encode(vlm, self.caption_texts(captions), proj_t)


class TextFeatureCache:
    """Caches no-grad text features until any of the tensors they depend on is modified in place."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: Tensor | None = None

    def get(self, depends_on: Sequence[Tensor], compute) -> Tensor:
        key = tuple((t.data_ptr(), t._version, t.device) for t in depends_on)
        if self._value is None or self._key != key:
            with torch.no_grad():
                self._value = compute()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None


# --- prompted image passes (H3, H5) ----------------------------------------------------------------
def patch_tokens(vlm: FrozenVLM, pixels: Tensor) -> Tensor:
    """(B, N_p, W) patch embeddings plus their positional embeddings."""
    emb = vlm.vision.embeddings
    x = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
    return x + emb.position_embedding.weight[1:].unsqueeze(0)


def prompted_sequence(
    vlm: FrozenVLM, pixels: Tensor, prompts: Tensor | None, cls_emb: Tensor | None = None
) -> Tensor:
    """[CLS + pos0, prompts (no pos), patches + pos], the input of the frozen ViT before `ln_pre`."""
    emb = vlm.vision.embeddings
    patches = patch_tokens(vlm, pixels)
    b = patches.shape[0]
    cls = (cls_emb if cls_emb is not None else emb.class_embedding) + emb.position_embedding.weight[0]
    seq = [cls.expand(b, 1, -1).to(patches.dtype)]
    if prompts is not None:
        seq.append(
            (prompts.unsqueeze(0).expand(b, -1, -1) if prompts.dim() == 2 else prompts).to(patches.dtype)
        )
    return torch.cat(seq + [patches], dim=1)


def run_sequence(
    vlm: FrozenVLM,
    seq: Tensor,
    readout: str | int = "cls",
    proj_v: Tensor | None = None,
    pre_proj: bool = False,
) -> Tensor:
    """`ln_pre` -> frozen blocks -> `ln_post` at the readout token -> projection (or W-dim with pre_proj)."""
    x = vlm.vision.pre_layrnorm(seq)
    x, _ = run_layers(vlm.vision.encoder.layers, x)
    out = vlm.vision.post_layernorm(x[:, 0 if readout == "cls" else int(readout)])
    if pre_proj:
        return out
    return out @ proj_v.to(out.dtype) if proj_v is not None else vlm.clip.visual_projection(out)


def encode_prompted(
    vlm: FrozenVLM,
    pixels: Tensor,
    prompts: Tensor,
    *,
    readout: str | int,
    proj_v: Tensor | None,
    cls_emb: Tensor | None,
    dropout: float = 0.0,
    dropout_scope: str = "sequence",
    training: bool = False,
) -> Tensor:
    """Frozen ViT over [CLS, prompts, patches] with optional token dropout during training.

    `dropout_scope`: `sequence` drops over the whole token sequence (as the ProS / UCDR-Adapter releases
    do, F.dropout on the embedded sequence) or `prompts` (the inserted prompt tokens only)."""
    active = training and dropout > 0
    if active and dropout_scope == "sequence":
        seq = F.dropout(prompted_sequence(vlm, pixels, prompts, cls_emb), dropout, training=True)
        return run_sequence(vlm, seq, readout, proj_v)
    if dropout_scope not in ("sequence", "prompts"):
        raise ConfigError(f"token_dropout_scope must be 'sequence' or 'prompts', not {dropout_scope!r}")
    if active:
        prompts = F.dropout(prompts, dropout, training=True)
    return vlm.encode_image(pixels, prompts=prompts, readout=readout, proj_v=proj_v, cls_emb=cls_emb)


@torch.no_grad()
def clsless_readout(vlm: FrozenVLM, pixels: Tensor, index: int = 0) -> Tensor:
    """W-dim `ln_post` output at `index` of a frozen pass over patches + pos only (no CLS token).

    This is the query feature of the UCDR-Adapter release (index 0 = the top-left patch)."""
    return run_sequence(vlm, patch_tokens(vlm, pixels), readout=index, pre_proj=True)
