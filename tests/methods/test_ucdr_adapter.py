"""UCDR-Adapter (METHODS §2): trainable parts per phase, frozen backbone, phase-2 mask, losses, variants."""

from __future__ import annotations

import pytest
import torch

from xdomain_bench.data.info import DataInfo
from xdomain_bench.methods.base import build_optimizer, get_method_class
from xdomain_bench.methods.config import load_card, resolve_config
from xdomain_bench.vlm import load_backbone

NAMES = ["cat", "dog", "ice_cream", "airplane", "001.Black_footed_Albatross"]


@pytest.fixture(scope="module")
def vlm():
    return load_backbone("tiny-clip")


def make_info(domains=("clipart", "painting", "real"), task="class") -> DataInfo:
    return DataInfo(
        dataset="domainnet",
        protocol="ucdr",
        variant="clean",
        holdout="sketch",
        class_names=NAMES,
        train_class_ids=list(range(len(NAMES))),
        train_domains=list(domains),
        task=task,
        same_set=False,
        has_captions=task == "itr",
        has_boxes=False,
        primary_metric="mAP@200",
        metrics=("mAP@200",),
        selection_metric="mAP@200",
        inverted_domains=(),
    )


def make_method(vlm, variant=None, info=None, **overrides):
    torch.manual_seed(0)
    cfg = resolve_config("ucdr_adapter", variant, "domainnet", overrides)
    return get_method_class("ucdr_adapter")(vlm, info or make_info(), cfg)


def make_batch(vlm, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = vlm.sizes.image_size
    return {
        "pixels": torch.randn(6, 3, s, s, generator=g),
        "label": torch.tensor([0, 1, 2, 0, 3, 4]),
        "domain_id": torch.tensor([0, 1, 2, 1, 0, 2]),
    }


def vlm_state(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items() if k.startswith("vlm.")}


def step(method, batch, lr=1e-3):
    params = [p for p in method.parameters() if p.requires_grad]
    opt = build_optimizer(params, {"name": "adam", "lr": lr})
    loss, logs = method.training_loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach()), logs


@pytest.mark.parametrize("variant", ["paper", "released_code"])
def test_each_phase_trains_exactly_its_parts_and_never_the_backbone(vlm, variant):
    m = make_method(vlm, variant)
    m.train()
    batch = make_batch(vlm)
    names = {id(p): n for n, p in m.named_parameters()}
    for phase in ("phase1", "phase2"):
        m.set_phase(phase)
        active = {id(p) for p in m.phase_parameters(phase)}
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        frozen = vlm_state(m)
        step(m, batch)
        for n, p in m.named_parameters():
            if n.startswith("vlm."):
                assert p.grad is None and not p.requires_grad, n
            elif id(p) in active:
                assert p.requires_grad and not torch.equal(before[n], p.detach()), (
                    f"{phase}: {n} did not change"
                )
            else:
                assert not p.requires_grad and torch.equal(before[n], p.detach()), f"{phase}: {n} changed"
        for k, v in vlm_state(m).items():
            assert torch.equal(v, frozen[k]), k
    assert {names[i] for i in map(id, m.phase_parameters("phase1"))} == {
        "domain_bank",
        "class_bank",
        "text.ctx",
    }
    assert {"cls_emb", "proj_v", "tpg.w_img.weight", "tpg.ln.weight"} <= {
        names[id(p)] for p in m.phase_parameters("phase2")
    }


def _perturb(param, row):
    with torch.no_grad():
        param[row] += 0.5


def test_phase2_mask_hides_the_samples_own_bank_rows(vlm):
    m = make_method(vlm, "paper").eval()
    b = make_batch(vlm)
    px, dom, lab = b["pixels"], b["domain_id"], b["label"]
    base = m.generate_prompts(px, dom, lab).detach()
    _perturb(m.class_bank, int(lab[0]))  # sample 0's own class row (label 0; sample 3 shares it)
    out = m.generate_prompts(px, dom, lab).detach()
    assert torch.equal(out[0], base[0]) and torch.equal(out[3, 1], base[3, 1])
    assert not torch.equal(out[1, 1], base[1, 1])  # another sample sees row 0
    _perturb(m.class_bank, 4)  # a row that is not sample 0's own
    assert not torch.equal(m.generate_prompts(px, dom, lab)[0, 1], base[0, 1])
    m = make_method(vlm, "paper").eval()
    base = m.generate_prompts(px, dom, lab).detach()
    _perturb(m.domain_bank, int(dom[0]))  # sample 0's own domain row (domain 0; sample 4 shares it)
    out = m.generate_prompts(px, dom, lab).detach()
    assert torch.equal(out[0], base[0]) and torch.equal(out[4, 0], base[4, 0])
    assert not torch.equal(out[1, 0], base[1, 0])
    assert torch.equal(out[1, 1], base[1, 1])  # class prompts do not read the domain bank


def _phase2_loss(m, batch):
    torch.manual_seed(0)  # released_code jitters its training inputs
    with torch.no_grad():
        return m.training_loss(batch)[0]


@pytest.mark.parametrize("variant", ["paper", "released_code"])
def test_phase2_training_loss_sees_the_own_bank_rows_only_in_released_code(vlm, variant):
    m = make_method(vlm, variant)
    m.set_phase("phase2")
    batch = {**make_batch(vlm), "label": torch.zeros(6, dtype=torch.long), "domain_id": torch.zeros(6, dtype=torch.long)}
    base = _phase2_loss(m, batch)
    for bank in (m.class_bank, m.domain_bank):  # row 0 is every sample's own class and domain row
        _perturb(bank, 0)
        moved = _phase2_loss(m, batch)
        if variant == "paper":
            assert torch.equal(moved, base)  # masked: the own rows never reach the generator
        else:
            assert not torch.allclose(moved, base, atol=1e-6)  # released: the mask is a no-op
        base = moved
    _perturb(m.class_bank, 1)  # nobody's own row: both variants read it
    assert not torch.allclose(_phase2_loss(m, batch), base, atol=1e-6)


def test_single_domain_bank_is_never_masked(vlm):
    m = make_method(vlm, "paper", info=make_info(domains=("photo",))).eval()
    assert m.domain_bank.shape[0] == 1 and m.notes["single_domain"]
    b = make_batch(vlm)
    masked = m.generate_prompts(b["pixels"], torch.zeros(6, dtype=torch.long), b["label"])
    assert torch.equal(masked[:, 0], m.generate_prompts(b["pixels"])[:, 0])
    batch = {k: v for k, v in b.items() if k != "domain_id"}
    m.set_phase("phase1")
    assert torch.isfinite(m.training_loss(batch)[0])


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_loss_falls_on_a_fixed_batch(vlm, phase):
    m = make_method(vlm, "paper")
    m.train()
    m.set_phase(phase)
    batch = make_batch(vlm, seed=1)
    torch.manual_seed(0)
    losses = [step(m, batch, lr=3e-3)[0] for _ in range(10)]
    assert losses[-1] < losses[0] - 0.05, losses


def test_phase1_logs_both_terms_and_fills_queues(vlm):
    m = make_method(vlm, "paper")
    m.train()
    m.set_phase("phase1")
    _, logs = step(m, make_batch(vlm))
    assert set(logs) == {"itc", "triplet"}
    assert m.queues.count.tolist() == [2, 1, 1, 1, 1]


def test_phase2_text_features_are_cached_and_follow_the_context(vlm):
    m = make_method(vlm, "paper")
    m.set_phase("phase2")
    first = m.class_text_features(grad=False)
    assert m.class_text_features(grad=False) is first and not first.requires_grad
    with torch.no_grad():
        m.text.ctx.add_(0.1)
    assert not torch.equal(m.class_text_features(grad=False), first)


def test_released_code_variant_ranks_raw_embeddings(vlm):
    m = make_method(vlm, "released_code").eval()
    assert m.similarity == "l2" and m.notes["released_code"]
    z = m.embed_images(make_batch(vlm))
    assert not torch.allclose(z.norm(dim=-1), torch.ones(6))
    assert not torch.equal(m.momentum_branch["class_bank"], m.class_bank.detach())
    p = make_method(vlm, "paper").eval()
    assert torch.equal(p.momentum_branch["class_bank"], p.class_bank.detach())
    assert torch.allclose(p.embed_images(make_batch(vlm)).norm(dim=-1), torch.ones(6))


def test_momentum_branch_is_an_ema_of_the_banks(vlm):
    m = make_method(vlm, "paper")
    m.train()
    m.set_phase("phase1")
    before = m.class_bank.detach().clone()
    step(m, make_batch(vlm))  # the EMA runs before the forward, on the pre-step banks (== its copy)
    assert torch.allclose(m.momentum_branch["class_bank"], before, atol=1e-7)
    after = m.class_bank.detach().clone()
    m.training_loss(make_batch(vlm))
    assert torch.allclose(m.momentum_branch["class_bank"], 0.999 * before + 0.001 * after)


def test_checkpoint_holds_trainable_state_only(vlm):
    m = make_method(vlm)
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    keys = set(ckpt["state_dict"])
    assert not any(k.startswith("vlm.") for k in keys)
    assert {"domain_bank", "class_bank", "text.ctx", "cls_emb", "proj_v", "tpg.w_prm.weight"} <= keys
    assert not any("queues" in k or "momentum_branch" in k for k in keys)


def test_exp_epoch_learning_rate_rule(vlm):
    from types import SimpleNamespace

    m = make_method(vlm)
    m.set_phase("phase2")
    m._trainer = SimpleNamespace(num_training_batches=4)  # the rule reads the epoch length lazily
    try:
        out = m.configure_optimizers()
        opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
        seen = []
        for _ in range(4 * 60 + 1):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    finally:
        m._trainer = None
    for s in (0, 3, 4, 39, 40, 240):
        epoch = s // 4
        assert seen[s] == pytest.approx(max(1e-4 * (1e-3) ** (epoch / 20), 1e-6), rel=1e-6)
    m.set_phase("phase1")
    assert not isinstance(m.configure_optimizers(), dict)  # constant lr: a bare optimiser


def test_card_resolves_with_dataset_overrides_and_full_provenance():
    card = load_card("ucdr_adapter")
    assert set(card["defaults"]) <= set(card["provenance"])
    assert resolve_config("ucdr_adapter", None, "sketchy")["n_ctx"] == 8
    assert resolve_config("ucdr_adapter", None, "domainnet")["n_ctx"] == 16
    cfg = resolve_config("ucdr_adapter", "released_code", "tuberlin")
    assert cfg["n_ctx"] == 8 and cfg["similarity"] == "l2" and cfg["mask_gt_rows"] is False
    fracs = [cfg["phases"][p]["step_fraction"] for p in ("phase1", "phase2")]
    assert sum(fracs) == pytest.approx(1.0)


def test_itr_data_trains_with_class_labels_and_frozen_captions(vlm):
    m = make_method(vlm, info=make_info(domains=("fdrd",), task="itr"))
    m.set_phase("phase1")
    batch = {**make_batch(vlm), "caption": ["a cat"] * 6}
    del batch["domain_id"]
    assert torch.isfinite(m.training_loss(batch)[0])
    texts = m.embed_texts(["a small cat", "a red plane"])
    assert torch.allclose(texts, vlm.encode_text(["a small cat", "a red plane"]))
