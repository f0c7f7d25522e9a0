"""Exact text-tower savings (the tower is causal, so the EOT feature depends only on tokens up to EOT): token
batches cut to their last EOT, the last block run at EOT only, and the shared-prefix product path, all against
the full computation over every padded position of the context length.

Tolerances: float32 features to 1e-6 of the tensor's scale (CLIP text features here reach |x| ~ 3,
where one float32 ulp is 2.4e-7; the full path itself is off float64 by ~1e-6), float32 gradients to 1e-5 of
theirs, and float64 everything to 1e-12, which only an exact rewrite can meet."""

from __future__ import annotations

import pytest
import torch

from xdomain_bench.vlm import TokenBatch, load_backbone

ATOL = 1e-6
CLASSES = ["ant", "apple", "barn", "aircraft carrier", "the eiffel tower", "a"]


@pytest.fixture(scope="module", params=["tiny-clip", "tiny-clip:text_layers=4", "float64"])
def vlm(request):
    if request.param == "float64":
        return load_backbone("tiny-clip:text_layers=3").double()
    return load_backbone(request.param)


def padded(vlm, texts: list[str]) -> TokenBatch:
    """Tokens padded to the full context length (77), as CLIP's `padding="max_length"` would give."""
    enc = vlm.tokenizer(texts, padding="max_length", truncation=True, max_length=vlm.sizes.context_length,
                        return_tensors="pt")
    ids = enc["input_ids"]
    return TokenBatch(ids, (ids == vlm.eot_id).int().argmax(dim=1))


def close(a, b, grad: bool = False) -> None:
    """Features to ATOL; gradients, sums of many float32 terms, to 10x that (float64: 1e-12 for both)."""
    tol = 1e-12 if b.dtype == torch.float64 else ATOL * (10 if grad else 1)
    torch.testing.assert_close(a, b, rtol=0, atol=tol * max(1.0, float(b.abs().max())))


def _ctx(vlm, *shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    dtype = vlm.text.embeddings.token_embedding.weight.dtype
    return (torch.randn(*shape, vlm.sizes.text_width, generator=g) * 0.5).to(dtype).requires_grad_(grad)


def test_plain_token_ids(vlm):
    texts = ["a photo of a cat.", "a red striped star with wings and a small square handle", "x", *CLASSES]
    full = padded(vlm, texts)
    assert full.ids.shape[1] == vlm.sizes.context_length > int(full.eot.max()) + 1
    ref = vlm.encode_text(full, trim=False)
    close(vlm.encode_text(full), ref)
    close(vlm.encode_text(texts), ref)  # tokenised to the batch's longest text
    close(vlm.encode_text(padded(vlm, texts[:1]))[0], ref[0])  # alone: cut to its own EOT


def test_context_tokens_and_their_gradient(vlm):
    m = 4
    texts = [f"{' '.join(['X'] * m)} {c}." for c in CLASSES]
    full = padded(vlm, texts)
    for ctx in (_ctx(vlm, m, grad=True), _ctx(vlm, len(texts), m, seed=1, grad=True)):  # shared, per text
        got = vlm.encode_text(full, context=ctx)
        ref = vlm.encode_text(full, context=ctx, trim=False)
        close(got, ref)
        (g_got,) = torch.autograd.grad(got.square().sum(), ctx)
        (g_ref,) = torch.autograd.grad(ref.square().sum(), ctx)
        close(g_got, g_ref, grad=True)


def test_deep_prompts_and_token_weights(vlm):
    """Deep context overwrites the placeholder slots before blocks 1..J-1, the last block included; the
    slots precede EOT, so cutting the padding and evaluating the last block at EOT stay exact."""
    m, depth = 3, vlm.sizes.text_layers - 1
    texts = [f"a photo of {' '.join(['X'] * m)} {c}." for c in CLASSES]
    full = padded(vlm, texts)
    ctx, deep = _ctx(vlm, m, grad=True), _ctx(vlm, depth, m, seed=2, grad=True)
    weights = 0.5 + torch.rand(full.ids.shape, generator=torch.Generator().manual_seed(3), dtype=ctx.dtype)
    for kw in ({"deep_context": deep}, {"context": ctx, "deep_context": deep}, {"token_weights": weights},
               {"context": ctx, "deep_context": deep, "token_weights": weights}):
        got = vlm.encode_text(full, **kw)
        ref = vlm.encode_text(full, **kw, trim=False)
        close(got, ref)
        params = [t for t in (ctx, deep) if any(t is v for v in kw.values())]
        if params:
            g_got = torch.autograd.grad(got.square().sum(), params)
            g_ref = torch.autograd.grad(ref.square().sum(), params)
            for a, b in zip(g_got, g_ref):
                close(a, b, grad=True)


def test_per_token_outputs_keep_the_padded_shape(vlm):
    """H7 returns every position, padding included: that path is not trimmed."""
    full = padded(vlm, CLASSES)
    out = vlm.encode_text(full, return_tokens=True)
    assert out.token_features.shape[:2] == full.ids.shape
    close(out.embedding, vlm.encode_text(full, trim=False))


def test_product_path_equals_the_full_computation(vlm):
    """encode_text_product (shared prefix, shared first-block suffix projections, last block at EOT only)
    against every (context, text) sequence padded to the context length and run in full."""
    m = 16
    texts = [f"{' '.join(['X'] * m)} {c}." for c in CLASSES]
    contexts = _ctx(vlm, 5, m, seed=4, grad=True)
    got = vlm.encode_text_product(padded(vlm, texts), contexts)
    ref = torch.stack([vlm.encode_text(padded(vlm, texts), context=c, trim=False) for c in contexts])
    assert got.shape == (5, len(texts), vlm.sizes.embed_dim)
    close(got, ref)
    (g_got,) = torch.autograd.grad(got.square().sum(), contexts)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), contexts)
    close(g_got, g_ref, grad=True)
