"""A small byte-level BPE vocabulary in CLIP's format, for the seeded and demo backbones.

CLIP's tokenizer lower-cases, splits words and applies byte-level BPE with `</w>` word ends. We build a
vocabulary of all single bytes (so any text tokenises) plus merges that spell out every word of a given
word list as one token, and load it with transformers' own `CLIPTokenizer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

BASE_WORDS = (
    "a an the of photo picture drawing sketch painting clipart image from domain with and in on this is "
    "x style kind type bird flower aircraft pet plane small large red orange yellow green teal blue purple "
    "pink brown grey black white plain striped dotted checkered circle square triangle star hexagon diamond "
    "cross crescent heart arrow wings legs handle spikes none"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> printable unicode map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _words(texts: Iterable[str]) -> list[str]:
    out: set[str] = set()
    for text in texts:
        out.update(re.findall(r"[a-z]+|[0-9]", text.lower().replace("_", " ")))
    return sorted(out)


def build_clip_tokenizer(extra_texts: Iterable[str] = (), model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer whose BPE merges (trained on BASE_WORDS + extra_texts) spell each listed word as one token."""
    byte_chars = list(_bytes_to_unicode().values())
    words = _words(list(BASE_WORDS) + list(extra_texts))
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=1, initial_alphabet=byte_chars,
                                  end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator(words, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    vocab: dict[str, int] = {}
    for token in [*byte_chars, *(c + "</w>" for c in byte_chars), *sorted(state["vocab"], key=state["vocab"].get)]:
        vocab.setdefault(token, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
