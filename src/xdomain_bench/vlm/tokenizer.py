"""A small byte-level BPE vocabulary in CLIP's format, for the seeded and demo backbones.

CLIP's tokenizer lower-cases, splits words and applies byte-level BPE with `</w>` word ends. We build a
vocabulary of all single bytes (so any text tokenises) plus merges that spell out every word of a given
word list as one token, and load it with transformers' own `CLIPTokenizer`.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

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


def train_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Deterministic BPE training: repeatedly merge the most frequent adjacent symbol pair (ties: the
    lexicographically smallest pair) until every word is a single symbol. Words are lower-case ASCII."""
    seqs = [[*w[:-1], w[-1] + "</w>"] for w in sorted(set(words)) if w]
    counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:]):
            counts[pair] += 1
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg or neg == 0:
            continue  # a stale heap entry
        merges.append(pair)
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            seq = seqs[i]
            for old in zip(seq, seq[1:]):
                counts[old] -= 1
                touched.add(old)
            out, j = [], 0
            while j < len(seq):
                if j + 1 < len(seq) and (seq[j], seq[j + 1]) == pair:
                    out.append(seq[j] + seq[j + 1])
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            seqs[i] = out
            for new in zip(out, out[1:]):
                counts[new] += 1
                where[new].add(i)
                touched.add(new)
        counts.pop(pair, None)
        for other in sorted(touched):
            if counts.get(other, 0) > 0:
                heapq.heappush(heap, (-counts[other], other))
    return merges


def build_clip_tokenizer(extra_texts: Iterable[str] = (), model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer whose BPE merges (trained on BASE_WORDS + extra_texts) spell each listed word as one token.

    The vocabulary is a pure function of the word list (same ids on every run and machine)."""
    return clip_tokenizer_from_merges(train_merges(_words(list(BASE_WORDS) + list(extra_texts))), model_max_length)


def clip_tokenizer_from_merges(merges: list[tuple[str, str]], model_max_length: int = 77,
                               printable_first: bool = False) -> CLIPTokenizer:
    """CLIP's vocabulary layout from a merge list: bytes, bytes + `</w>`, one token per merge, then SOT and EOT.
    OpenAI's released BPE file gives its 49,408-token vocabulary this way with `printable_first` (byte symbols
    ordered printable bytes first, as OpenAI's tokenizer lists them); our seeded vocabularies keep byte order."""
    mapping = _bytes_to_unicode()
    order = sorted(mapping, key=lambda b: mapping[b] >= chr(256)) if printable_first else sorted(mapping)
    byte_chars = [mapping[b] for b in order]
    vocab: dict[str, int] = {}
    for token in [*byte_chars, *(c + "</w>" for c in byte_chars), *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
