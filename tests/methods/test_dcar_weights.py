"""DCAR caption layout and token re-weighting (hand-computed cases)."""

from __future__ import annotations

import math

import pytest
import torch

from xdomain_bench.methods.dcar_weights import caption_tokens, shift_weights, token_weights
from xdomain_bench.vlm import load_backbone


@pytest.fixture(scope="module")
def vlm():
    return load_backbone("tiny-clip")


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_token_weights_match_a_hand_computation():
    # 1 caption, L = 6: [SOS, c1, c2, c3, EOT, pad]; E = 2
    u = [[0.3, 0.1], [1.0, 0.0], [0.0, 1.0], [1.0, 0.4], [0.2, -0.7], [5.0, 5.0]]
    f, fb = [1.0, 0.0], [0.6, 0.8]
    mask = torch.tensor([[False, True, True, True, False, False]])
    w = token_weights(torch.tensor([u]), mask, torch.tensor([f]), torch.tensor(fb))
    diffs = [abs(_cos(u[j], f) - _cos(u[j], fb)) for j in (1, 2, 3)]  # 0.4, 0.8, 0.074
    mean = sum(diffs) / 3
    expected = [min(2.0, max(0.5, d / mean)) for d in diffs]  # normalise, then clamp
    assert expected[2] == 0.5  # the clamp is active in this case
    assert w.shape == (1, 6)
    assert w[0, [0, 4, 5]].tolist() == [1.0, 1.0, 1.0]  # SOS, EOT, padding
    assert w[0, 1:4].tolist() == pytest.approx(expected, abs=1e-6)
    # clamping before normalising would give a different answer
    clamp_first = [min(2.0, max(0.5, d)) for d in diffs]
    wrong = [c / (sum(clamp_first) / 3) for c in clamp_first]
    assert w[0, 1:4].tolist() != pytest.approx(wrong, abs=1e-3)


def test_token_weights_clamp_high_and_degenerate_caption():
    u = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]]])
    mask = torch.tensor([[False, True, True, True, False]])
    # f == fb on tokens 2, 3 (diff 0) and differs on token 1: 1/mean = 3 -> clamped to 2
    w = token_weights(u, mask, torch.tensor([[1.0, 1.0]]), torch.tensor([-1.0, 1.0]))
    assert w[0].tolist() == pytest.approx([1.0, 2.0, 0.5, 0.5, 1.0])
    same = token_weights(u, mask, torch.tensor([[0.0, 1.0]]), torch.tensor([0.0, 1.0]))
    assert same.tolist() == [[1.0] * 5]  # image == blank: no preference, no division by zero


def test_shift_weights_puts_ones_at_the_context_slots():
    w = torch.tensor([[1.0, 0.5, 2.0, 1.0, 1.0]])
    assert shift_weights(w, 3).tolist() == [[1.0, 1.0, 1.0, 1.0, 0.5, 2.0, 1.0, 1.0]]


def test_caption_layout_aligns_raw_and_prompted_tokens(vlm):
    k = 4
    texts = ["a red star", "a x-ray of 3 x 4 boxes", "", " ".join(["photo"] * 200)]
    lay = caption_tokens(vlm, texts, k)
    raw, pr, mask = lay.raw, lay.prompted, lay.caption_mask
    ctx_len = vlm.sizes.context_length
    assert pr.ids.shape == (4, raw.ids.shape[1] + k) and pr.ids.shape[1] <= ctx_len
    sos = vlm.tokenizer.bos_token_id
    for i in range(4):
        e = int(raw.eot[i])
        assert raw.ids[i, 0] == sos and pr.ids[i, 0] == sos
        assert raw.ids[i, e] == vlm.eot_id and pr.ids[i, e + k] == vlm.eot_id and int(pr.eot[i]) == e + k
        assert (pr.ids[i, 1:1 + k] == vlm.placeholder_id).all()
        assert (pr.ids[i] == vlm.placeholder_id).sum() == k  # the lone "x" words were sanitised
        assert torch.equal(pr.ids[i, 1 + k:e + k], raw.ids[i, 1:e])
        assert mask[i].tolist() == [0 < j < e for j in range(raw.ids.shape[1])]
    assert int(pr.eot[3]) == ctx_len - 1  # long caption truncated so that EOT survives
    assert int(raw.eot[2]) == 1  # empty caption: [SOS, EOT]
    # the prompted layout encodes with k context vectors (H6) and unit weights without error
    out = vlm.encode_text(pr, context=torch.zeros(k, vlm.sizes.text_width),
                          token_weights=shift_weights(torch.ones(raw.ids.shape), k))
    assert out.shape == (4, vlm.sizes.embed_dim) and torch.isfinite(out).all()
