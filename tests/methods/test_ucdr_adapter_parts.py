"""Building blocks of UCDR-Adapter / ProS: prompted passes, queues, EMA, triplet, released-code inputs."""

from __future__ import annotations

import math

import pytest
import torch

from xdomain_bench.methods.momentum import ClassQueues, EMACopy
from xdomain_bench.methods.prompting import (
    ContextText,
    clsless_readout,
    encode_prompted,
    prompted_sequence,
    run_sequence,
    sanitize_placeholder,
    vpt_bound,
    vpt_uniform,
)
from xdomain_bench.methods.ucdr_adapter import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TargetPromptGenerator,
    _hue,
    color_jitter,
    queue_triplet_loss,
    released_train_pixels,
)
from xdomain_bench.vlm import load_backbone


@pytest.fixture(scope="module")
def vlm():
    return load_backbone("tiny-clip")


def pixels(vlm, n=3, seed=0):
    s = vlm.sizes.image_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_vpt_init_bound_follows_patch_size_and_width(vlm):
    s = vlm.sizes
    assert vpt_bound(s) == pytest.approx(math.sqrt(6 / (3 * s.patch_size**2 + s.vision_width)))
    x = vpt_uniform(500, s)
    assert x.shape == (500, s.vision_width) and x.abs().max() <= vpt_bound(s)
    assert x.abs().max() > 0.9 * vpt_bound(s)


def test_own_sequence_pass_matches_encode_image(vlm):
    W = vlm.sizes.vision_width
    px, prompts = pixels(vlm), torch.randn(3, 2, W) * 0.05
    cls_emb, proj_v = torch.randn(W) * 0.1, torch.randn(W, vlm.sizes.embed_dim) * 0.1
    ref = vlm.encode_image(px, prompts=prompts, readout=1, proj_v=proj_v, cls_emb=cls_emb)
    ours = run_sequence(vlm, prompted_sequence(vlm, px, prompts, cls_emb), 1, proj_v)
    assert torch.allclose(ours, ref, atol=1e-5)
    kwargs = dict(readout=1, proj_v=proj_v, cls_emb=cls_emb, dropout=0.5, dropout_scope="sequence")
    assert torch.equal(encode_prompted(vlm, px, prompts, training=False, **kwargs), ref)
    torch.manual_seed(0)
    dropped = encode_prompted(vlm, px, prompts, training=True, **kwargs)
    assert not torch.allclose(dropped, ref, atol=1e-3)


def test_clsless_readout_matches_the_hf_encoder_on_patches_only(vlm):
    px = pixels(vlm)
    emb = vlm.vision.embeddings
    patches = emb.patch_embedding(px).flatten(2).transpose(1, 2) + emb.position_embedding.weight[1:]
    with torch.no_grad():
        hidden = vlm.vision.encoder(inputs_embeds=vlm.vision.pre_layrnorm(patches))
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden.last_hidden_state
        ref = vlm.vision.post_layernorm(hidden[:, 0])
    assert torch.allclose(clsless_readout(vlm, px, 0), ref, atol=1e-5)
    assert not torch.allclose(ref, vlm.frozen_image_features(px, pre_proj=True), atol=1e-3)


def test_context_text_fills_templates_and_sanitises_stray_placeholders(vlm):
    ctx = ContextText(vlm.sizes.text_width, 4, "a photo of {class} from {ctx} domain.")
    assert ctx.class_texts(["ice_cream"]) == ["a photo of ice cream from X X X X domain."]
    assert ctx.caption_texts(["a 1920 x 1080 X-ray"]) == ["X X X X a 1920 × 1080 ×-ray"]
    assert sanitize_placeholder("xbox and axe, 3x") == "xbox and axe, 3×"
    feats = ctx.encode_captions(vlm, ["a 1920 x 1080 X-ray", "a cat"])
    assert feats.shape == (2, vlm.sizes.embed_dim) and feats.requires_grad


def test_tpg_attention_hand_computed():
    torch.manual_seed(0)
    tpg = TargetPromptGenerator(4, tau=0.5, ratio=2.0)
    g, bank = torch.randn(2, 4), torch.randn(3, 4)
    keys = bank @ tpg.w_prm.weight.t() + tpg.w_prm.bias
    q = g @ tpg.w_img.weight.t() + tpg.w_img.bias
    out = []
    for i, masked in enumerate((None, 1)):
        k = keys.clone()
        if masked is not None:
            k[masked] = tpg.w_prm.bias  # a zeroed row maps to the bias
        a = torch.softmax(k @ q[i] / 0.5, dim=0)
        p = a @ k
        out.append((p + tpg.ln(p @ tpg.p_proj.weight.t() + tpg.p_proj.bias)) / 2.0)
    got = tpg(g, bank, torch.tensor([-1, 1]))
    assert torch.allclose(got, torch.stack(out), atol=1e-6)


def test_class_queues_are_fifo_and_sample_from_the_right_pools():
    q = ClassQueues(num_classes=3, length=2, dim=2)
    f = torch.arange(10.0).view(5, 2)
    q.push(f, torch.tensor([0, 0, 0, 1, -1]))
    feats, cls = q.entries()
    assert q.count.tolist() == [2, 1, 0]
    assert sorted(map(tuple, feats[cls == 0].tolist())) == [(2.0, 3.0), (4.0, 5.0)]  # oldest dropped
    pos, neg, ok = q.sample(torch.tensor([0, 1, 2]), n=50)
    assert ok.tolist() == [True, True, False]  # class 2 has an empty positive pool
    assert {tuple(r) for r in pos[0].tolist()} <= {(2.0, 3.0), (4.0, 5.0)}
    assert {tuple(r) for r in neg[0].tolist()} == {(6.0, 7.0)}
    assert {tuple(r) for r in neg[1].tolist()} == {(2.0, 3.0), (4.0, 5.0)}


def test_queue_triplet_loss_hand_computed():
    q = ClassQueues(num_classes=2, length=3, dim=2)
    q.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    f = torch.tensor([[0.6, 0.8], [0.0, -1.0]], requires_grad=True)
    loss = queue_triplet_loss(f, torch.tensor([0, 1]), q, margin=0.2, n=2)
    d = lambda a, b: math.dist(a, b)  # noqa: E731
    expect = (
        max(0.0, d((0.6, 0.8), (1, 0)) - d((0.6, 0.8), (0, 1)) + 0.2)
        + max(0.0, d((0, -1), (0, 1)) - d((0, -1), (1, 0)) + 0.2)
    ) / 2
    assert loss.item() == pytest.approx(expect, abs=1e-6)
    loss.backward()
    assert f.grad.abs().sum() > 0


def test_ema_copy_and_random_init():
    online = {"a": torch.ones(3)}
    ema = EMACopy(online, momentum=0.9, init="copy")
    ema.update({"a": torch.full((3,), 11.0)})
    assert torch.allclose(ema["a"], torch.full((3,), 2.0))
    rnd = EMACopy(online, init="random", init_fn=lambda t: torch.zeros_like(t))
    assert torch.equal(rnd["a"], torch.zeros(3))
    assert "ema_a" not in rnd.state_dict()


def test_imagenet_renormalisation_equals_normalising_raw_pixels(vlm):
    raw = torch.rand(2, 3, 8, 8)
    mean, std = vlm.preprocess.mean, vlm.preprocess.std
    clip_norm = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    ref = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(released_train_pixels(clip_norm, mean, std, "imagenet", None), ref, atol=1e-5)
    assert released_train_pixels(clip_norm, mean, std, "backbone", None) is clip_norm


def test_color_jitter_semantics():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    green = _hue(red, torch.tensor([1 / 3]))
    assert torch.allclose(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    x = torch.rand(4, 3, 5, 5)
    assert torch.allclose(_hue(x, torch.zeros(4)), x, atol=1e-5)
    assert torch.allclose(color_jitter(x, [0, 0, 0, 0]), x)
    y = color_jitter(x, [0.4, 0.4, 0.4, 0.4], torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, x)
