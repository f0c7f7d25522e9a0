"""The seeded CLIP-format tokenizer: reproducible builds, listed words as single tokens."""

from __future__ import annotations

import subprocess
import sys

from xdomain_bench.vlm.tokenizer import build_clip_tokenizer

WORDS = ["aircraft carrier", "The Eiffel Tower", "teddy-bear", "red striped star with wings"]


def test_builds_are_identical_in_one_process():
    a = build_clip_tokenizer(WORDS).backend_tokenizer.to_str()
    b = build_clip_tokenizer(WORDS).backend_tokenizer.to_str()
    assert a == b


def test_builds_are_identical_across_interpreters():
    code = ("from xdomain_bench.vlm.tokenizer import build_clip_tokenizer as b; "
            f"print(b({WORDS!r})('a photo of a red striped aircraft carrier.')['input_ids'])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(outs) == 1


def test_listed_words_are_single_tokens():
    tok = build_clip_tokenizer(WORDS)
    for word in ("aircraft", "carrier", "eiffel", "striped", "wings", "photo"):
        assert len(tok(word)["input_ids"]) == 3, word  # SOS, the word, EOS
    ids = tok("zzqx")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id  # unknown words still tokenise
