"""Linear probe, CoOp and VPT-shallow (METHODS §1.6): trainables, frozen backbone, losses, caption data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xdomain_bench.data.info import DataInfo
from xdomain_bench.methods.base import build_optimizer, get_method_class
from xdomain_bench.methods.config import load_card, resolve_config
from xdomain_bench.vlm import load_backbone

NAMES = ["cat", "dog", "ice_cream", "airplane", "001.Black_footed_Albatross"]
CAPTIONS = [
    "a small black cat",
    "a dog on a 1920 x 1080 screen",
    "a cone of ice cream",
    "a small black cat",
    "a red airplane",
    "a white albatross",
]


@pytest.fixture(scope="module")
def vlm():
    return load_backbone("tiny-clip")


def make_info(task="class") -> DataInfo:
    return DataInfo(
        dataset="fdrd" if task == "itr" else "cub",
        protocol="p",
        variant="clean",
        holdout=None,
        class_names=NAMES,
        train_class_ids=list(range(len(NAMES))),
        train_domains=["photo"],
        task=task,
        same_set=task == "class",
        has_captions=task == "itr",
        has_boxes=False,
        primary_metric="m",
        metrics=("m",),
        selection_metric="m",
        inverted_domains=(),
    )


def make_method(vlm, name, task="class", **overrides):
    torch.manual_seed(0)
    return get_method_class(name)(vlm, make_info(task), resolve_config(name, None, None, overrides))


def make_batch(vlm, seed=0, captions=False):
    s = vlm.sizes.image_size
    batch = {
        "pixels": torch.randn(6, 3, s, s, generator=torch.Generator().manual_seed(seed)),
        "label": torch.tensor([0, 1, 2, 0, 3, 4]),
        "domain_id": torch.zeros(6, dtype=torch.long),
    }
    if captions:
        batch["caption"] = list(CAPTIONS)
    return batch


def step(method, batch, lr=1e-3):
    opt = build_optimizer([p for p in method.parameters() if p.requires_grad], {"name": "adam", "lr": lr})
    loss, _ = method.training_loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


CASES = [
    ("linear_probe", {}, {"proj_v"}),
    ("coop", {}, {"proj_v", "text.ctx"}),
    ("coop", {"train_text_projection": True}, {"proj_v", "text.ctx", "proj_t"}),
    ("vpt", {}, {"proj_v", "prompts"}),
]


@pytest.mark.parametrize("task", ["class", "itr"])
@pytest.mark.parametrize("name,overrides,trained", CASES)
def test_one_step_changes_every_trainable_part_and_no_backbone_tensor(vlm, name, overrides, trained, task):
    m = make_method(vlm, name, task, **overrides)
    m.train()
    m.set_phase(m.phases()[0])
    assert {n for n, p in m.named_parameters() if p.requires_grad} == trained
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    step(m, make_batch(vlm, captions=task == "itr"))
    for n, p in m.named_parameters():
        if n.startswith("vlm."):
            assert p.grad is None and not p.requires_grad and torch.equal(before[n], p), n
        else:
            assert not torch.equal(before[n], p.detach()), f"{name}: {n} did not change"
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == trained


@pytest.mark.parametrize("task", ["class", "itr"])
@pytest.mark.parametrize("name", ["linear_probe", "coop", "vpt"])
def test_loss_falls_on_a_fixed_batch(vlm, name, task):
    m = make_method(vlm, name, task)
    m.train()
    batch = make_batch(vlm, seed=1, captions=task == "itr")
    losses = [step(m, batch, lr=3e-3) for _ in range(10)]
    assert losses[-1] < losses[0] - 0.05, losses


def test_linear_probe_reads_cached_pre_proj_features(vlm):
    m = make_method(vlm, "linear_probe")
    assert m.cacheable and m.cache_feature == "pre_proj"
    b = make_batch(vlm)
    feats = vlm.frozen_image_features(b["pixels"], pre_proj=True)
    assert torch.allclose(m.embed_images({"features": feats}), m.embed_images(b), atol=1e-6)
    ref = F.normalize(vlm.encode_image(b["pixels"]), dim=-1)  # proj_v starts at the checkpoint's
    assert torch.allclose(m.embed_images(b), ref, atol=1e-5)


def test_coop_context_sits_in_front_of_class_names_and_captions(vlm):
    m = make_method(vlm, "coop")
    assert m.text.class_texts(["ice_cream"]) == [" ".join(["X"] * 16) + " ice cream."]
    with torch.no_grad():
        ctx_caps = m.embed_texts(CAPTIONS)
        manual = vlm.encode_text(
            vlm.tokenize([" ".join(["X"] * 16) + " " + c.replace(" x ", " × ") for c in CAPTIONS]),
            context=m.text.ctx,
        )
    assert torch.allclose(ctx_caps, manual, atol=1e-5)
    assert not torch.allclose(ctx_caps, vlm.encode_text(CAPTIONS), atol=1e-3)


def _hf_vision_tokens(vlm, pixels, prompts, after_cls=True):
    """Every output token of HF's own CLIP vision encoder over [CLS, prompts, patches] (VPT, H3: prompts
    right after CLS, no positional embedding), or [CLS, patches, prompts] with after_cls=False."""
    emb = vlm.vision.embeddings
    pos = emb.position_embedding.weight
    patch = emb.patch_embedding.weight.shape[-1]
    patches = F.conv2d(pixels, emb.patch_embedding.weight, stride=patch).flatten(2).transpose(1, 2) + pos[1:]
    b = pixels.shape[0]
    cls = (emb.class_embedding + pos[0]).expand(b, 1, -1)
    prompts = prompts.expand(b, -1, -1)
    seq = torch.cat([cls, prompts, patches] if after_cls else [cls, patches, prompts], dim=1)
    return vlm.vision.encoder(inputs_embeds=vlm.vision.pre_layrnorm(seq)).last_hidden_state


@pytest.mark.parametrize("readout", ["cls", 1, 11])
def test_vpt_inserts_prompts_after_cls(vlm, readout):
    m = make_method(vlm, "vpt", readout=readout).eval()
    n = m.prompts.shape[0]
    assert n == 10
    with torch.no_grad():
        m.proj_v.add_(0.1 * torch.randn_like(m.proj_v))  # as after training
        b = make_batch(vlm)
        index = 0 if readout == "cls" else readout  # 1: the first prompt; 11 = n + 1: the first patch
        tokens = _hf_vision_tokens(vlm, b["pixels"], m.prompts)
        ref = F.normalize(vlm.vision.post_layernorm(tokens[:, index]) @ m.proj_v, dim=-1)
        torch.testing.assert_close(m.embed_images(b), ref, rtol=1e-5, atol=1e-5)
        if readout != "cls":  # the readout token's value depends on where the prompts sit
            wrong = _hf_vision_tokens(vlm, b["pixels"], m.prompts, after_cls=False)[:, index]
            assert not torch.allclose(F.normalize(vlm.vision.post_layernorm(wrong) @ m.proj_v, dim=-1), ref, atol=1e-3)
        zero_shot = F.normalize(vlm.encode_image(b["pixels"]), dim=-1)
        assert not torch.allclose(m.embed_images(b), zero_shot, atol=1e-3)


@pytest.mark.parametrize("name", ["linear_probe", "coop", "vpt"])
def test_cards_have_provenance_for_every_default(name):
    card = load_card(name)
    assert set(card["defaults"]) <= set(card["provenance"])
