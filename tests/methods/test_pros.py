"""ProS (METHODS §1.6): stage-wise trainables, frozen backbone, stage-2 masking, simulator, loss."""

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


def make_info(domains=("clipart", "painting", "real")) -> DataInfo:
    return DataInfo(
        dataset="domainnet",
        protocol="ucdr",
        variant="clean",
        holdout="sketch",
        class_names=NAMES,
        train_class_ids=list(range(len(NAMES))),
        train_domains=list(domains),
        task="class",
        same_set=False,
        has_captions=False,
        has_boxes=False,
        primary_metric="mAP@200",
        metrics=("mAP@200",),
        selection_metric="mAP@200",
        inverted_domains=(),
    )


def make_method(vlm, variant=None, info=None, **overrides):
    torch.manual_seed(0)
    cfg = resolve_config("pros", variant, "domainnet", overrides)
    return get_method_class("pros")(vlm, info or make_info(), cfg)


def make_batch(vlm, seed=0):
    s = vlm.sizes.image_size
    return {
        "pixels": torch.randn(6, 3, s, s, generator=torch.Generator().manual_seed(seed)),
        "label": torch.tensor([0, 1, 2, 0, 3, 4]),
        "domain_id": torch.tensor([0, 1, 2, 1, 0, 2]),
    }


def step(method, batch, lr=1e-3):
    opt = build_optimizer([p for p in method.parameters() if p.requires_grad], {"name": "adam", "lr": lr})
    loss, _ = method.training_loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def test_each_stage_trains_exactly_its_parts_and_never_the_backbone(vlm):
    m = make_method(vlm)
    m.train()
    batch = make_batch(vlm)
    names = {id(p): n for n, p in m.named_parameters()}
    expected = {  # METHODS.md (ProS): exactly these; "simulator" stands for every tensor of the stage-2 ViT
        "stage1": {"domain_bank", "class_bank", "text.ctx", "proj_t"},
        "stage2": {"simulator", "templates", "text.ctx", "proj_t", "proj_v", "cls_emb"},
    }
    simulator = {n for n in names.values() if n.startswith("simulator.")}
    assert simulator == {f"simulator.{n}" for n, _ in m.simulator.named_parameters()} and simulator
    assert list(m.phases()) == ["stage1", "stage2"]
    for stage in m.phases():
        m.set_phase(stage)
        active = {id(p) for p in m.phase_parameters(stage)}
        trained = {names[i] for i in active}
        assert {"simulator" if n.startswith("simulator.") else n for n in trained} == expected[stage], stage
        assert (simulator <= trained) == (stage == "stage2")
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        torch.manual_seed(0)
        step(m, batch)
        for n, p in m.named_parameters():
            if n.startswith("vlm."):
                assert p.grad is None and not p.requires_grad and torch.equal(before[n], p), n
            elif id(p) in active:
                assert not torch.equal(before[n], p.detach()), f"{stage}: {n} did not change"
            else:
                assert torch.equal(before[n], p.detach()), f"{stage}: {n} changed"


def test_stage2_masks_the_samples_own_units(vlm):
    m = make_method(vlm).eval()
    b = make_batch(vlm)
    px, dom, lab = b["pixels"], b["domain_id"], b["label"]
    base = m.generate_prompts(px, dom, lab).detach()
    with torch.no_grad():
        m.class_bank[0] += 0.5  # sample 0's (and 3's) own class unit
        m.domain_bank[0] += 0.5  # sample 0's (and 4's) own domain unit
    out = m.generate_prompts(px, dom, lab).detach()
    assert torch.equal(out[0], base[0])
    assert not torch.equal(out[1], base[1]) and not torch.equal(out[3], base[3])
    with torch.no_grad():
        m.class_bank[4] += 0.5  # not sample 0's own row
    assert not torch.equal(m.generate_prompts(px, dom, lab)[0], base[0])
    assert not torch.equal(m.generate_prompts(px)[0], base[0])  # test time: nothing masked


def test_simulator_shape_and_heads(vlm):
    m = make_method(vlm)
    layers = m.simulator.layers
    assert len(layers) == 2 and layers[0].self_attn.num_heads == max(1, vlm.sizes.vision_width // 64)
    assert m.simulator.patch_embedding.kernel_size == (vlm.sizes.patch_size,) * 2
    assert m.simulator.position_embedding.shape == (vlm.sizes.num_patches, vlm.sizes.vision_width)
    out = m.generate_prompts(make_batch(vlm)["pixels"])
    assert out.shape == (6, 2, vlm.sizes.vision_width)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_loss_falls_on_a_fixed_batch(vlm, stage):
    m = make_method(vlm, token_dropout=0.0)
    m.train()
    m.set_phase(stage)
    batch = make_batch(vlm, seed=1)
    losses = [step(m, batch, lr=1e-3) for _ in range(10)]
    assert losses[-1] < losses[0] - 0.05, losses


def test_checkpoint_and_variants(vlm):
    m = make_method(vlm, "released_code")
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    assert not any(k.startswith("vlm.") for k in ckpt["state_dict"])
    assert {"proj_t", "templates", "simulator.proj"} <= set(ckpt["state_dict"])
    assert m.similarity == "l2" and m.phases() == ["stage1", "stage2"]
    card = load_card("pros")
    assert set(card["defaults"]) <= set(card["provenance"])
    assert resolve_config("pros", None, "sketchy")["phases"]["stage2"]["epochs"] == 200


def test_single_domain_data_runs(vlm):
    m = make_method(vlm, info=make_info(domains=("photo",)))
    b = make_batch(vlm)
    del b["domain_id"]
    m.set_phase("stage2")
    assert m.domain_bank.shape[0] == 1 and torch.isfinite(m.training_loss(b)[0])
