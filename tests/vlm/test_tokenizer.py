"""The seeded CLIP-format tokenizer: reproducible builds, listed words as single tokens."""

from __future__ import annotations

import os
import subprocess
import sys

from xdomain_bench.vlm.tokenizer import build_clip_tokenizer

WORDS = ["aircraft carrier", "The Eiffel Tower", "teddy-bear", "red striped star with wings"]


def test_builds_are_identical_across_interpreters_with_different_hash_seeds():
    """Vocabulary, merges and ids of fresh interpreters whose str hashing (and so set order) differs."""
    code = ("import hashlib, sys; from xdomain_bench.vlm.tokenizer import build_clip_tokenizer as b; "
            f"t = b({WORDS!r}); print(hash('xbench')); "
            "print(hashlib.sha256(t.backend_tokenizer.to_str().encode()).hexdigest()); "
            "print(t('a photo of a red striped aircraft carrier.')['input_ids'])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.splitlines() for seed in ("1", "2")]
    assert runs[0][0] != runs[1][0]  # the two interpreters really hash strings differently
    assert runs[0][1:] == runs[1][1:]
    ids = [int(i) for i in runs[0][2].strip("[]").split(",")]
    assert len(ids) == 2 + 8 + 1  # SOS, eight words spelt as one token each, the full stop, EOS


def test_listed_words_are_single_tokens():
    tok = build_clip_tokenizer(WORDS)
    for word in ("aircraft", "carrier", "eiffel", "striped", "wings", "photo"):
        assert len(tok(word)["input_ids"]) == 3, word  # SOS, the word, EOS
    ids = tok("zzqx")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id  # unknown words still tokenise
