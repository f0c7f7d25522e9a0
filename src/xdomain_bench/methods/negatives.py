"""Negative captions for DCAR's category loss (METHODS.md §5.4, §5.7).

Each negative carries its category (an index into the training classes, i.e. the `label` space):
- released FDRD negatives (`batch["negatives"]`): category from the class name found in the text,
  else unknown (None) and left to zero-shot classification by the caller;
- class-swapped: the image's class name in the caption replaced by another training class (category =
  that class); when the name does not occur, the template with the other class;
- templated (datasets without captions): "a photo of a {class}." for 4 other training classes.
Attribute-swapped (same-category) negatives are never invented here: DCAR's were not released (§5.7), so
the 1 + α weight applies only where the data's own negatives share the image's category.
Sampling uses a torch.Generator, so a seeded builder gives the same negatives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..vlm import FrozenVLM
from .text import DEFAULT_TEMPLATE, clean_class_name, frozen_text_features

NEGATIVE_MODES = ("released", "swapped", "none")


@dataclass(frozen=True)
class Negative:
    text: str
    category: int | None  # training-class index; None = unknown (classify zero-shot)
    kind: str  # "released" | "class_swap" | "template"


def _name_pattern(name: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s_]+", name.strip()) if w]
    return re.compile(r"(?<!\w)" + r"[\s_-]+".join(words) + r"(?!\w)", re.IGNORECASE)


def find_class_span(text: str, name: str) -> tuple[int, int] | None:
    """The first case-insensitive, whole-word occurrence of a class name (spaces, _ and - interchangeable)."""
    if not name.strip():
        return None
    match = _name_pattern(name).search(text)
    return match.span() if match else None


def match_category(text: str, class_names: Sequence[str] | Sequence[re.Pattern[str] | None]) -> int | None:
    """Index of the training class whose name occurs in `text` (the longest if several), else None.
    `class_names` may be names or their precompiled patterns (None for an empty name)."""
    best, best_len = None, 0
    for i, name in enumerate(class_names):
        if isinstance(name, str):
            name = _name_pattern(name) if name.strip() else None
        match = name.search(text) if name is not None else None
        if match is not None and match.end() - match.start() > best_len:
            best, best_len = i, match.end() - match.start()
    return best


def class_swap(caption: str, name: str, other: str, template: str = DEFAULT_TEMPLATE) -> tuple[str, str]:
    """(negative, kind): `name` replaced by `other` where it occurs, else the template with `other`."""
    span = find_class_span(caption, name)
    if span is None:
        return template.format(other), "template"
    return caption[:span[0]] + other + caption[span[1]:], "class_swap"


class NegativeBuilder:
    """Builds per-image negatives with categories in the training-label space."""

    def __init__(self, class_names: Sequence[str], *, mode: str = "released", num_negatives: int = 4,
                 template: str = DEFAULT_TEMPLATE, seed: int = 0) -> None:
        if mode not in NEGATIVE_MODES:
            raise ConfigError(f"negatives must be one of {', '.join(NEGATIVE_MODES)}, not {mode!r}")
        self.names = [clean_class_name(c) for c in class_names]
        self.patterns = [_name_pattern(n) if n.strip() else None for n in self.names]
        self.mode = mode
        self.num_negatives = int(num_negatives)
        self.template = template
        self.generator = torch.Generator().manual_seed(int(seed))

    def _others(self, label: int) -> list[int]:
        """Up to `num_negatives` distinct training classes other than `label`, drawn at random."""
        pool = [c for c in range(len(self.names)) if c != label]
        order = torch.randperm(len(pool), generator=self.generator).tolist()
        return [pool[i] for i in order[:self.num_negatives]]

    def templated(self, labels: Sequence[int]) -> tuple[list[str], list[list[Negative]]]:
        """Datasets without captions: the class caption and 4 captions of other classes (all ω = 1)."""
        captions, negatives = [], []
        for label in labels:
            captions.append(self.template.format(self.names[label]))
            if self.mode == "none":
                negatives.append([])
                continue
            negatives.append([Negative(self.template.format(self.names[c]), c, "template")
                              for c in self._others(label)])
        return captions, negatives

    def for_captions(self, captions: Sequence[str], labels: Sequence[int],
                     released: Sequence[Sequence[str]] | None = None) -> list[list[Negative]]:
        """Negatives of caption data: released ones when present (mode `released`), else class swaps."""
        out: list[list[Negative]] = []
        for i, (caption, label) in enumerate(zip(captions, labels)):
            if self.mode == "none":
                out.append([])
                continue
            name = self.names[label] if 0 <= label < len(self.names) else ""
            given = [t for t in (released[i] if released is not None else []) if t and t.strip()]
            negs: list[Negative] = []
            if self.mode == "released" and given:
                negs = [Negative(t, match_category(t, self.patterns), "released") for t in given[:self.num_negatives]]
            elif name:
                for c in self._others(label):
                    text, kind = class_swap(caption, name, self.names[c], self.template)
                    negs.append(Negative(text, c, kind))
            out.append(negs)
        return out


@torch.no_grad()
def zero_shot_categories(vlm: FrozenVLM, texts: Sequence[str], class_feats: Tensor) -> list[int]:
    """Training-class index of each text by cosine against (normalised) class-name features."""
    if not texts:
        return []
    feats = F.normalize(frozen_text_features(vlm, list(texts)).to(class_feats.device), dim=-1)
    return (feats @ F.normalize(class_feats.float(), dim=-1).t()).argmax(dim=1).tolist()
