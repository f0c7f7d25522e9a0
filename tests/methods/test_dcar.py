"""DCAR on tiny-clip: coupling, token weights in the text path, category loss, frozen backbone, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xdomain_bench.data.info import DataInfo
from xdomain_bench.methods import dcar as dcar_mod
from xdomain_bench.methods.base import build_optimizer, get_method_class
from xdomain_bench.methods.config import load_card, resolve_config
from xdomain_bench.methods.dcar import DCAR, category_loss, warmup_cosine_factor
from xdomain_bench.methods.dcar_weights import caption_tokens, token_weights
from xdomain_bench.vlm import load_backbone

NAMES = ["red star", "cat", "dog", "Abyssinian", "pug", "boxer"]


@pytest.fixture(scope="module")
def vlm():
    return load_backbone("tiny-clip")


def make_info(captions: bool = True) -> DataInfo:
    return DataInfo(dataset="fdrd" if captions else "domainnet", protocol="itr" if captions else "ucdr",
                    variant="clean", holdout=None, class_names=NAMES, train_class_ids=list(range(len(NAMES))),
                    train_domains=["photo"], task="itr" if captions else "class", same_set=False,
                    has_captions=captions, has_boxes=False, primary_metric="r1", metrics=("r1",),
                    selection_metric="r1", inverted_domains=())


def make_method(vlm, captions: bool = True, variant: str | None = None, **over) -> DCAR:
    torch.manual_seed(0)
    m = get_method_class("dcar")(vlm, make_info(captions), resolve_config("dcar", variant, overrides=over))
    m.set_phase("main")
    return m


def make_batch(vlm, captions: bool = True) -> dict:
    g = torch.Generator().manual_seed(1)
    s = vlm.sizes.image_size
    batch = {"pixels": torch.randn(4, 3, s, s, generator=g), "label": torch.tensor([0, 1, 3, 4]),
             "class_id": torch.tensor([0, 1, 3, 4]), "domain_id": torch.zeros(4, dtype=torch.long)}
    if captions:
        batch["caption"] = ["a red star with blue stripes", "a cat on a sofa", "An Abyssinian with grey fur",
                            "a pug on a red rug"]
        batch["negatives"] = [[], [], ["A Bengal with grey fur", "A boxer with grey fur"], []]
    return batch


def test_visual_prompts_are_a_function_of_the_text_prompts(vlm):
    m = make_method(vlm)
    c = m.coupling
    assert c.depth == min(9, vlm.sizes.vision_layers, vlm.sizes.text_layers)
    e0, deep = c.visual_prompts()
    by_hand = [c.ctx[j] @ c.couplings[j].weight.t() + c.couplings[j].bias for j in range(c.depth)]
    assert torch.allclose(e0, by_hand[0]) and torch.allclose(deep, torch.stack(by_hand[1:]))
    pixels = make_batch(vlm)["pixels"]
    f = m.image_embedding(pixels)
    f.sum().backward()  # gradient flows from the image embedding to every depth's text prompts
    assert all(c.ctx.grad[j].abs().sum() > 0 for j in range(c.depth))
    with torch.no_grad():
        before = c.visual_prompts()[1].clone()
        c.ctx[1] += 0.5
        assert not torch.allclose(c.visual_prompts()[1], before)
        assert not torch.allclose(m.image_embedding(pixels), f)
    assert torch.allclose(f.norm(dim=-1), torch.ones(4))


def test_token_weights_in_the_text_path(vlm, monkeypatch):
    m = make_method(vlm)
    batch = make_batch(vlm)
    seen = []
    real = vlm.encode_text

    def spy(tokens, **kw):
        if kw.get("context") is not None:
            seen.append((tokens, kw["token_weights"]))
        return real(tokens, **kw)

    monkeypatch.setattr(vlm, "encode_text", spy)
    m.training_loss(batch)
    (tokens, w), = seen
    k = m.n_ctx
    ids = tokens.ids
    n_texts = 4 + 2 + 4 * 3  # positives, 2 released, 4 class swaps x 3 (no invented attribute swaps)
    assert ids.shape[0] == n_texts and w.shape == ids.shape
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    special[:, 1:1 + k] = True
    special |= torch.arange(ids.shape[1]) >= tokens.eot.unsqueeze(1)  # EOT and padding
    assert (w[special] == 1).all()
    assert torch.isfinite(w).all() and (w[~special] >= 0.5).all() and (w[~special] <= 2).all()
    assert (w[~special] != 1).any()
    # positives are weighted with their own image's frozen embedding
    lay = caption_tokens(vlm, batch["caption"], k)
    u = vlm.encode_text(lay.raw, return_tokens=True).token_features
    ref = token_weights(u, lay.caption_mask, vlm.frozen_image_features(batch["pixels"]), m.blank_embedding())
    assert torch.allclose(w[:4, 1 + k:1 + k + ref.shape[1] - 1], ref[:, 1:], atol=1e-5)
    # at test time f̄ (mean normalised frozen embedding of the training images seen) replaces f⁰
    fbar = F.normalize(vlm.frozen_image_features(batch["pixels"]), dim=-1).mean(0)
    assert m.image_count == 4 and torch.allclose(m.mean_image_embedding(), fbar, atol=1e-6)
    seen.clear()
    m.embed_texts(batch["caption"])
    ref = token_weights(u, lay.caption_mask, fbar.expand(4, -1), m.blank_embedding())
    assert torch.allclose(seen[0][1][:, 1 + k:1 + k + ref.shape[1] - 1], ref[:, 1:], atol=1e-5)
    none = make_method(vlm, test_token_weights="none")
    none.training_loss(batch)
    seen.clear()
    none.embed_texts(batch["caption"])
    assert seen[0][1] is None


def test_category_loss_hand_computed():
    pos = torch.tensor([0.3, 0.5])
    neg = torch.tensor([[0.2, 0.1, 0.9], [0.4, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])  # padding is ignored
    omega = torch.tensor([[1.5, 1.0, 1.0], [1.0, 1.0, 1.0]])
    scale = 10.0
    l0 = -math.log(math.exp(3) / (math.exp(3) + 1.5 * math.exp(2) + math.exp(1)))
    l1 = -math.log(math.exp(5) / (math.exp(5) + math.exp(4)))
    assert category_loss(pos, neg, mask, omega, scale).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert category_loss(pos, neg, none, omega, scale).item() == 0.0


def test_same_category_negatives_weigh_one_plus_alpha(vlm, monkeypatch):
    m = make_method(vlm, alpha=0.5)
    captured = {}
    real = dcar_mod.category_loss

    def spy(pos, neg, mask, omega, scale):
        captured.update(pos=pos, neg=neg, mask=mask, omega=omega)
        return real(pos, neg, mask, omega, scale)

    monkeypatch.setattr(dcar_mod, "category_loss", spy)
    batch = make_batch(vlm)
    loss, logs = m.training_loss(batch)
    mask, omega = captured["mask"], captured["omega"]
    # rows 0, 1, 3: 4 class swaps each (their attribute words red/blue make no negative of their own);
    # row 2: its two released negatives (Bengal: zero-shot category, boxer: by name)
    assert mask.sum(1).tolist() == [4, 4, 2, 4]
    expected = torch.ones_like(omega)
    # "A Bengal ..." names no training class: its category is the zero-shot class (independent check)
    with torch.no_grad():
        neg = F.normalize(vlm.encode_text(["A Bengal with grey fur"]), dim=-1)
        cls = F.normalize(vlm.encode_text([f"a photo of a {c}." for c in NAMES]), dim=-1)
    if int((neg @ cls.t()).argmax()) == 3:
        expected[2, 0] = 1.5
    assert torch.equal(omega, expected)
    assert loss.item() == pytest.approx((logs["l_con"] + real(captured["pos"], captured["neg"], mask, omega,
                                                               m.logit_scale)).item(), rel=1e-6)


def test_templated_captions_without_caption_data(vlm):
    m = make_method(vlm, captions=False)
    batch = make_batch(vlm, captions=False)
    caps, negs = m.batch_texts(batch)
    assert caps[1] == "a photo of a cat." and m.notes["templated_captions"]
    assert all(len(r) == 4 and all(n.category != lab for n in r) for r, lab in zip(negs, [0, 1, 3, 4]))
    loss, logs = m.training_loss(batch)
    assert torch.isfinite(loss) and logs["same_category_negatives"] == 0
    emb = m.embed_texts(["a photo of a dog."])
    assert emb.shape == (1, vlm.sizes.embed_dim)


def test_backbone_frozen_trainables_move_and_loss_falls(vlm):
    m = make_method(vlm)
    batch = make_batch(vlm)
    frozen = {k: v.clone() for k, v in m.vlm.state_dict().items()}
    train0 = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    assert train0 and not any(n.startswith("vlm.") for n in train0)
    opt = build_optimizer([p for p in m.parameters() if p.requires_grad],
                          {"name": "sgd", "lr": 0.1, "momentum": 0.9})
    losses = []
    for _ in range(6):
        loss, _ = m.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    for k, v in m.vlm.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(p.grad is None for p in m.vlm.parameters())
    for n, p in m.named_parameters():
        if n in train0:
            assert not torch.equal(p, train0[n]), n
    assert set(m.trainable_state_dict()) >= {"coupling.ctx", "image_sum", "image_count"}


def test_trainable_counts_follow_the_shapes(vlm):
    s = vlm.sizes
    for variant, j in (("default", min(9, s.vision_layers, s.text_layers)), ("shallow", 1)):
        m = make_method(vlm, variant=variant)
        k, t, w, e = 4, s.text_width, s.vision_width, s.embed_dim
        assert m.trainable_counts()["total"] == j * k * t + j * (t * w + w) + 2 * e * (e // 4)
        assert m.notes["depth"] == j


@pytest.mark.slow
def test_vit_b16_counts():
    b16 = load_backbone("tiny-clip:preset=vit-b-16")
    info = make_info()
    assert DCAR(b16, info, resolve_config("dcar")).trainable_counts()["total"] == 3_695_360  # ≈3.70 M
    assert DCAR(b16, info, resolve_config("dcar", "shallow")).trainable_counts()["total"] == 527_104  # ≈0.53 M


def test_card_and_schedule():
    card = load_card("dcar")
    assert set(card["defaults"]) <= set(card["provenance"])
    published = {"num_negatives", "negatives", "backbone"}
    assert all("not published; our choice" in str(v) for k, v in card["provenance"].items() if k not in published)
    assert warmup_cosine_factor(0, total=100, warmup=10, warmup_ratio=0.005) == 0.005
    assert warmup_cosine_factor(9, total=100, warmup=10, warmup_ratio=0.005) == 0.005
    assert warmup_cosine_factor(10, total=100, warmup=10, warmup_ratio=0.005) == 1.0
    assert warmup_cosine_factor(55, total=100, warmup=10, warmup_ratio=0.005) == pytest.approx(0.5)
    cfg = resolve_config("dcar", "no_negatives")
    assert cfg["negatives"] == "none" and cfg["optimizer"]["name"] == "sgd"


def test_no_negatives_gives_plain_infonce(vlm):
    m = make_method(vlm, negatives="none")
    loss, logs = m.training_loss(make_batch(vlm))
    assert "l_cate" not in logs and loss.item() == pytest.approx(logs["l_con"].item())


def test_alpha_has_no_effect_without_same_category_negatives(vlm):
    """Without negatives of the image's own category (none released, none invented), α changes nothing;
    with a released negative of the image's class it does."""
    batch = make_batch(vlm)
    for row in batch["negatives"]:
        row.clear()  # no released negatives: class swaps of other categories only
    losses = {}
    for alpha in (0.0, 0.5):
        m = make_method(vlm, alpha=alpha)
        torch.manual_seed(0)
        losses[alpha] = m.training_loss(batch)[0].item()
    assert losses[0.0] == pytest.approx(losses[0.5], rel=1e-7)
    label = int(batch["label"][0])
    batch["negatives"][0].append(f"a photo of a {NAMES[label]} in the wrong place")
    with_same = {}
    for alpha in (0.0, 0.5):
        m = make_method(vlm, alpha=alpha)
        torch.manual_seed(0)
        with_same[alpha] = m.training_loss(batch)[0].item()
    assert with_same[0.5] > with_same[0.0]
