"""DALSCLIP (METHODS.md §4) on tiny-clip: invariance at zero removal, per-domain gradients, the prompt
generator, frozen backbone, losses against hand-computed references, degradations and parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xdomain_bench.data.info import DataInfo
from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.base import get_method_class
from xdomain_bench.methods.config import resolve_config
from xdomain_bench.methods.dalsclip import DALSCLIP
from xdomain_bench.methods.dalsclip_parts import PromptEMA, grad_reverse

CLASSES = ["ant", "apple", "barn", "bear", "bee", "bench"]


def make_info(domains=("clipart", "painting", "real"), task="class", captions=False) -> DataInfo:
    return DataInfo(dataset="domainnet", protocol="ucdr", variant="clean", holdout="sketch",
                    class_names=list(CLASSES), train_class_ids=list(range(len(CLASSES))),
                    train_domains=list(domains), task=task, same_set=False, has_captions=captions,
                    has_boxes=False, primary_metric="mAP@200", metrics=("mAP@200",),
                    selection_metric="mAP@200", inverted_domains=())


def make_method(vlm, info=None, **overrides) -> DALSCLIP:
    variant = overrides.pop("variant", None)
    cfg = resolve_config("dalsclip", variant=variant, overrides=overrides)
    return DALSCLIP(vlm, info or make_info(), cfg)


def make_batch(vlm, domains, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    n = len(domains)
    size = vlm.sizes.image_size
    labels = labels if labels is not None else [i % len(CLASSES) for i in range(n)]
    return {"pixels": torch.randn(n, 3, size, size, generator=g), "label": torch.tensor(labels),
            "domain_id": torch.tensor(domains), "class_id": torch.tensor(labels), "index": torch.arange(n)}


def randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_registered_and_card_resolves():
    assert get_method_class("dalsclip") is DALSCLIP
    cfg = resolve_config("dalsclip", dataset="cub")
    assert cfg["variant"] == "full" and cfg["batch_size"] == 32 and cfg["n_tok"] == 16
    assert resolve_config("dalsclip", variant="dpl")["lambda_spec"] == 0.0
    with pytest.raises(ConfigError):
        resolve_config("dalsclip", overrides={"no_such_key": 1})


def test_zero_removal_gives_frozen_feature(tiny_vlm):
    m = make_method(tiny_vlm)
    randomise(m.mapping)  # s is non-trivial, yet W_r = 0 (weight and bias) removes nothing
    assert torch.count_nonzero(m.removal.weight) == 0 and torch.count_nonzero(m.removal.bias) == 0
    batch = make_batch(tiny_vlm, [0, 1, 2, 0])
    m.eval()
    ref = F.normalize(tiny_vlm.encode_image(batch["pixels"]).float(), dim=-1)
    with torch.no_grad():
        e = m.embed_images(batch)
        s, f_inv = m.split_feature(m.frozen_feature(batch))
    torch.testing.assert_close(f_inv, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(e, ref, rtol=0, atol=1e-6)
    assert s.abs().sum() > 0
    randomise(m.removal, seed=2)  # a non-zero removal map moves the embedding
    with torch.no_grad():
        assert (m.embed_images(batch) - ref).abs().max() > 1e-3


def test_each_head_gets_gradient_only_from_its_domain(tiny_vlm):
    m = make_method(tiny_vlm, dropout=0.0)
    randomise(m.removal, seed=3)
    m.train()
    batch = make_batch(tiny_vlm, [0, 0, 2, 2, 0, 2], labels=[0, 1, 2, 3, 4, 5])  # domain 1 absent
    loss, _ = m.training_loss(batch)
    loss.backward()
    heads = m.spec_heads.heads
    assert heads[1].weight.grad is None and heads[1].bias.grad is None

    # reference: the spec loss restricted to domain 0's rows, averaged over the batch's valid rows
    with torch.no_grad():
        s = m.mapping(m.frozen_feature(batch))
    ref_head = torch.nn.Linear(s.shape[1], len(CLASSES))
    ref_head.load_state_dict(heads[0].state_dict())
    rows = batch["domain_id"] == 0
    ref = F.cross_entropy(ref_head(s[rows]), batch["label"][rows], reduction="sum") / len(rows)
    ref.backward()
    lam_spec = m.lambdas[0]
    torch.testing.assert_close(heads[0].weight.grad, lam_spec * ref_head.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(heads[0].bias.grad, lam_spec * ref_head.bias.grad, rtol=1e-4, atol=1e-6)

    # changing the labels of domain-2 samples leaves head 0's gradient unchanged
    g0 = heads[0].weight.grad.clone()
    m.zero_grad()
    batch2 = dict(batch, label=torch.tensor([0, 1, 5, 5, 4, 0]))
    m.training_loss(batch2)[0].backward()
    torch.testing.assert_close(heads[0].weight.grad, g0, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(heads[2].weight.grad, torch.zeros_like(heads[2].weight.grad))


def test_prompt_generator_depends_on_domain_mixture(tiny_vlm):
    torch.manual_seed(0)
    m = make_method(tiny_vlm, dropout=0.0)
    gen = m.prompt_gen
    gen.eval()
    f_hat = F.normalize(torch.randn(5, tiny_vlm.sizes.embed_dim, generator=torch.Generator().manual_seed(4)), dim=-1)
    with torch.no_grad():
        gen.keys.copy_(torch.randn(gen.keys.shape, generator=torch.Generator().manual_seed(5)))
        gen.query.weight.mul_(20.0)  # sharpen the attention so that samples mix the keys differently
        a = gen.domain_attention(f_hat)
        scores = (f_hat @ gen.query.weight.t() + gen.query.bias) @ gen.keys.t() / math.sqrt(f_hat.shape[1])
        torch.testing.assert_close(a, scores.softmax(-1), rtol=1e-5, atol=1e-6)
        assert (a.max(0).values - a.min(0).values).max() > 0.1  # the mixture differs between samples
        u = gen(f_hat)
        z = a @ gen.keys
        torch.testing.assert_close(u, gen.mlp(torch.cat([f_hat, z], -1)).view_as(u))
        # moving one domain key changes each sample's prompt in proportion to its weight on that key
        j = int(a[:, 0].argmax())
        gen.keys[0].add_(0.5)
        u2 = gen(f_hat)
    delta = (u2 - u).flatten(1).norm(dim=1)
    assert delta[j] > 0
    # batch aggregation: P_d = mean of u over domain d's samples; relabelling one sample moves P_0
    domains = torch.tensor([0, 0, 1, 1, 2])
    from xdomain_bench.methods.dalsclip_parts import domain_means

    present, prompts = domain_means(u, domains)
    assert present == [0, 1, 2]
    torch.testing.assert_close(prompts[0], u[:2].mean(0))
    _, moved = domain_means(u, torch.tensor([0, 0, 0, 1, 2]))
    torch.testing.assert_close(moved[0], u[:3].mean(0))
    assert (moved[0] - prompts[0]).abs().max() > 0


def test_class_loss_matches_per_sample_reference(tiny_vlm):
    m = make_method(tiny_vlm, dropout=0.0)
    randomise(m.removal, seed=5)
    m.train()
    batch = make_batch(tiny_vlm, [0, 1, 2, 1], labels=[3, 0, 5, 2])
    loss, logs = m.training_loss(batch)
    with torch.no_grad():
        f_hat = F.normalize(tiny_vlm.encode_image(batch["pixels"]).float(), dim=-1)
        e = F.normalize(f_hat - m.removal(m.mapping(f_hat)), dim=-1)
        u = m.prompt_gen(f_hat)
        terms = []
        for i, d in enumerate(batch["domain_id"].tolist()):
            p_d = u[batch["domain_id"] == d].mean(0)
            texts = [f"{' '.join(['X'] * m.n_tok)} {c}." for c in CLASSES]
            t = F.normalize(tiny_vlm.encode_text(texts, context=p_d).float(), dim=-1)
            logits = e[i] @ t.t() * tiny_vlm.logit_scale
            terms.append(-logits.log_softmax(-1)[batch["label"][i]])
        ref = torch.stack(terms).mean()
    torch.testing.assert_close(logs["cls"], ref, rtol=1e-4, atol=1e-5)
    assert set(logs) == {"cls", "spec", "adv", "dom"}


def test_text_cap_keeps_batch_classes(tiny_vlm):
    m = make_method(tiny_vlm, max_text_sequences=6)  # 3 domains -> 2 classes per step
    labels = torch.tensor([4, 4, 1])
    chosen = m.select_classes(labels, 3)
    assert chosen.tolist() == [1, 4]
    chosen = m.select_classes(torch.tensor([4, 4, 4]), 3)
    assert 4 in chosen.tolist() and len(chosen) == 2
    m.train()
    loss, _ = m.training_loss(make_batch(tiny_vlm, [0, 1, 2], labels=[4, 4, 1]))
    assert torch.isfinite(loss)


def test_backbone_frozen_trainables_change_and_loss_falls(tiny_vlm):
    torch.manual_seed(0)
    m = make_method(tiny_vlm, optimizer={"name": "adam", "lr": 3e-3})
    m.set_phase("main")
    before_vlm = {k: v.clone() for k, v in tiny_vlm.state_dict().items()}
    before = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("vlm.")}
    opt = m.configure_optimizers()
    batch = make_batch(tiny_vlm, [0, 1, 2, 0, 1, 2], labels=[0, 1, 2, 3, 4, 5])
    m.train()
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss, _ = m.training_loss(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for k, v in tiny_vlm.state_dict().items():
        assert torch.equal(v, before_vlm[k]), f"backbone tensor {k} changed"
    assert all(p.grad is None for p in tiny_vlm.parameters())
    assert all(not p.requires_grad for p in tiny_vlm.parameters())
    for n, p in m.named_parameters():
        if not n.startswith("vlm."):
            assert not torch.equal(p.detach(), before[n]), f"trainable {n} did not change"
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05, losses
    assert bool(m.prompt_ema.seen.all())


def test_gradient_reversal():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    (grad_reverse(x, 0.7) * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w)


def test_prompt_ema_and_eval_prompt(tiny_vlm):
    ema = PromptEMA(3, 2, 4, momentum=0.9)
    assert ema.mean() is None
    p0, p1, p2 = torch.full((2, 4), 1.0), torch.full((2, 4), 3.0), torch.full((2, 4), 5.0)
    ema.update([0, 2], torch.stack([p0, p2]))
    ema.update([0], torch.stack([p1]))
    torch.testing.assert_close(ema.value[0], 0.9 * p0 + 0.1 * p1)
    torch.testing.assert_close(ema.mean(), (0.9 * p0 + 0.1 * p1 + p2) / 2)  # domain 1 never seen

    m = make_method(tiny_vlm)
    m.train()
    m.training_loss(make_batch(tiny_vlm, [0, 1, 2]))
    m.eval()
    texts = ["bear", "a photo of a bee."]
    got = m.embed_texts(texts)
    prefix = " ".join(["X"] * m.n_tok)
    ref = tiny_vlm.encode_text([f"{prefix} bear.", f"{prefix} a photo of a bee."], context=m.prompt_ema.mean())
    torch.testing.assert_close(got, F.normalize(ref.float(), dim=-1), rtol=1e-5, atol=1e-6)


def test_query_batch_prompt(tiny_vlm):
    m = make_method(tiny_vlm, test_prompt="query_batch")
    m.eval()
    b1, b2 = make_batch(tiny_vlm, [0, 0, 0], seed=1), make_batch(tiny_vlm, [0, 0], seed=2)
    with torch.no_grad():
        m.embed_images(b1)
        m.embed_images(b2)
        f_hat = torch.cat([m.frozen_feature(b1), m.frozen_feature(b2)])
        expected = m.prompt_gen(f_hat).mean(0)
    m.train()
    m.eval()  # the evaluator toggles modes between image and text embedding: the accumulator survives
    torch.testing.assert_close(m.eval_prompt(), expected, rtol=1e-5, atol=1e-6)
    prefix = " ".join(["X"] * m.n_tok)
    ref = tiny_vlm.encode_text([f"{prefix} bee."], context=expected)
    torch.testing.assert_close(m.embed_texts(["bee"]), F.normalize(ref.float(), dim=-1), rtol=1e-5, atol=1e-6)
    m.train()
    m.training_loss(make_batch(tiny_vlm, [0, 1, 2]))
    assert m._query_count == 0  # a training step starts a new accumulator
    m.eval()
    torch.testing.assert_close(m.eval_prompt(), m.prompt_ema.mean())  # nothing embedded yet: source mean


def test_single_domain_degrades(tiny_vlm):
    m = make_method(tiny_vlm, make_info(domains=("photo",)))
    assert m.notes["single_domain"] is True
    assert m.dom_s is None and m.dom_inv is None and m.prompt_gen.query is None
    assert len(m.spec_heads.heads) == 1
    f_hat = F.normalize(torch.randn(4, tiny_vlm.sizes.embed_dim), dim=-1)
    assert torch.equal(m.prompt_gen.domain_attention(f_hat), torch.ones(4, 1))
    m.train()
    loss, logs = m.training_loss(make_batch(tiny_vlm, [0, 0, 0, 0]))
    assert set(logs) == {"cls", "spec"} and torch.isfinite(loss)
    with pytest.raises(ConfigError):
        m.training_loss(make_batch(tiny_vlm, [0, 1]))


def test_caption_data_uses_domain_prefixed_infonce(tiny_vlm):
    info = make_info(domains=("photo",), task="itr", captions=True)
    m = make_method(tiny_vlm, info, dropout=0.0)
    batch = make_batch(tiny_vlm, [0, 0, 0], labels=[0, 1, 1])
    batch["caption"] = ["a small ant on a leaf", "a red apple", "a red apple"]
    m.train()
    loss, logs = m.training_loss(batch)
    with torch.no_grad():
        f_hat = F.normalize(tiny_vlm.encode_image(batch["pixels"]).float(), dim=-1)
        e = F.normalize(f_hat - m.removal(m.mapping(f_hat)), dim=-1)
        p = m.prompt_gen(f_hat).mean(0)
        prefix = " ".join(["X"] * m.n_tok)
        t = F.normalize(tiny_vlm.encode_text([f"{prefix} {c}" for c in batch["caption"]], context=p).float(), dim=-1)
        logits = e @ t.t() * tiny_vlm.logit_scale
        target = torch.tensor([[1, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]])
        ref = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.t().log_softmax(1)).sum(1).mean())
    torch.testing.assert_close(logs["cls"], ref, rtol=1e-4, atol=1e-5)
    loss.backward()
    assert m.prompt_gen.mlp[-1].weight.grad.abs().sum() > 0


def test_dpl_variant_is_prompt_mlp_only(tiny_vlm):
    m = make_method(tiny_vlm, variant="dpl")
    e_dim, t_dim, h = tiny_vlm.sizes.embed_dim, tiny_vlm.sizes.text_width, tiny_vlm.sizes.embed_dim
    expected = (e_dim * h + h) + (h * h + h) + (h * 16 * t_dim + 16 * t_dim)
    assert m.trainable_counts()["total"] == expected
    batch = make_batch(tiny_vlm, [0, 1, 2])
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.embed_images(batch), F.normalize(tiny_vlm.encode_image(batch["pixels"]), dim=-1))
    m.train()
    _, logs = m.training_loss(batch)
    assert set(logs) == {"cls"}


def test_parameter_count_vit_b16():
    """§4.2: ≈ 6.7 M trainable parameters for B/16 on DomainNet (K = 5, C = 245)."""
    from xdomain_bench.vlm import load_backbone

    vlm = load_backbone("tiny-clip:preset=vit-b-16")
    e_dim, t_dim, k, c, n = 512, 512, 5, 245, 16  # §1.1 reference sizes, checked against the backbone below
    assert (vlm.sizes.embed_dim, vlm.sizes.text_width) == (e_dim, t_dim)
    info = DataInfo("domainnet", "ucdr", "clean", "sketch", [f"c{i}" for i in range(c)], list(range(c)),
                    [f"d{i}" for i in range(k)], "class", False, False, False, "m", ("m",), "m", ())
    m = DALSCLIP(vlm, info, resolve_config("dalsclip"))
    h = e_dim
    expected = (2 * (e_dim * e_dim + e_dim) + (e_dim * e_dim + e_dim) + k * (e_dim * c + c)
                + 2 * (e_dim * k + k) + (e_dim * e_dim + e_dim) + k * e_dim
                + (2 * e_dim * h + h) + (h * h + h) + (h * n * t_dim + n * t_dim))
    total = m.trainable_counts()["total"]
    assert total == expected
    assert abs(total / 1e6 - 6.7) < 0.05


def test_encode_text_product_matches_plain_path(tiny_vlm):
    """The shared-prefix text path (used for the K × C class prompts) equals encode_text per context."""
    prefix = " ".join(["X"] * 4)
    texts = [f"{prefix} {c}." for c in CLASSES] + [f"{prefix} a red {CLASSES[0]} in a barn."]
    ctx = torch.randn(3, 4, tiny_vlm.sizes.text_width, generator=torch.Generator().manual_seed(0), requires_grad=True)
    got = tiny_vlm.encode_text_product(texts, ctx)
    ref = torch.stack([tiny_vlm.encode_text(texts, context=c) for c in ctx])
    assert got.shape == (3, len(texts), tiny_vlm.sizes.embed_dim)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g_got, = torch.autograd.grad(got.square().sum(), ctx)
    g_ref, = torch.autograd.grad(ref.square().sum(), ctx)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-4)
    # placeholders after the shared prefix: the plain path is used, with the same result
    late = [f"a {c} {prefix}." for c in CLASSES]
    torch.testing.assert_close(tiny_vlm.encode_text_product(late, ctx.detach()),
                               torch.stack([tiny_vlm.encode_text(late, context=c) for c in ctx.detach()]))


def test_captions_with_a_standalone_x_train_and_embed(tiny_vlm):
    """'X-ray', '3 x 4' and 'Model X' hold the placeholder word; it must not count as one of the n_tok slots
    (it used to raise 'every text needs exactly 16 X placeholders')."""
    info = make_info(domains=("photo",), task="itr", captions=True)
    m = make_method(tiny_vlm, info, dropout=0.0)
    captions = ["an X-ray of a hand", "a 3 x 4 grid of tiles", "a car, Model X"]
    texts = m.prompted_texts(captions)
    assert all(t.split().count("X") == m.n_tok for t in texts)
    batch = make_batch(tiny_vlm, [0, 0, 0], labels=[0, 1, 2])
    batch["caption"] = captions
    m.train()
    loss, _ = m.training_loss(batch)
    assert torch.isfinite(loss)
    m.eval()
    with torch.no_grad():
        assert m.embed_texts(captions).shape[0] == 3


def _clustered_features(dim: int, sizes=(7, 9, 11), seed=0):
    """Unit features around len(sizes) orthogonal directions, with their generating cluster labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][: len(sizes)]
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    feats = centres[labels] + 0.05 * torch.randn(len(labels), dim, generator=g)
    return F.normalize(feats, dim=-1) * 3.0, labels  # un-normalised scale: prepare_fit normalises


def test_pseudo_domains_split_one_domain_data_by_kmeans(tiny_vlm):
    e_dim = tiny_vlm.sizes.embed_dim
    m = make_method(tiny_vlm, make_info(domains=("photo",)), pseudo_domains=3, dropout=0.0)
    assert m.num_domains == 3 and m.dom_s is not None and len(m.spec_heads.heads) == 3
    feats, truth = _clustered_features(e_dim)
    assert m.needs_train_features()
    with pytest.raises(ConfigError, match="not fitted"):
        m.training_loss({"features": feats[:4], "label": torch.zeros(4, dtype=torch.long),
                         "domain_id": torch.zeros(4, dtype=torch.long)})
    m.prepare_fit(feats)
    assert not m.needs_train_features()
    assigned = m.pseudo.assign(F.normalize(feats, dim=-1))
    # the clusters are recovered up to a relabelling: one pseudo-domain per generating cluster, all distinct
    mapping = {int(t): set(assigned[truth == t].tolist()) for t in truth.unique()}
    assert all(len(ids) == 1 for ids in mapping.values())
    assert len({next(iter(ids)) for ids in mapping.values()}) == 3
    assert sorted(m.notes["pseudo_domains"]["sizes"]) == [7, 9, 11]

    # training uses the pseudo-domains (not the data's single domain id) for L_dom, L_adv and the heads
    labels = torch.arange(len(truth)) % len(CLASSES)
    batch = {"features": feats, "label": labels, "class_id": labels, "index": torch.arange(len(truth)),
             "domain_id": torch.zeros(len(truth), dtype=torch.long)}
    m.train()
    _, logs = m.training_loss(batch)
    assert set(logs) == {"cls", "spec", "adv", "dom"}
    with torch.no_grad():
        s = m.mapping(F.normalize(feats, dim=-1))
        ref_dom = F.cross_entropy(m.dom_s(s), assigned)
    torch.testing.assert_close(logs["dom"], ref_dom)


def test_pseudo_domains_are_off_with_real_domains(tiny_vlm):
    m = make_method(tiny_vlm, make_info(), pseudo_domains=4)
    assert m.pseudo is None and m.num_domains == 3 and not m.needs_train_features()
    assert m.notes["pseudo_domains"].startswith("off")


def test_pseudo_domains_need_enough_images_and_a_valid_k(tiny_vlm):
    m = make_method(tiny_vlm, make_info(domains=("photo",)), pseudo_domains=4)
    with pytest.raises(ConfigError, match="at least 4 training images"):
        m.prepare_fit(torch.randn(3, tiny_vlm.sizes.embed_dim))
    with pytest.raises(ConfigError):
        resolve_config("dalsclip", overrides={"pseudo_domains": 1})
