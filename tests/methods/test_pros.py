"""ProS (METHODS §1.6): stage-wise trainables, frozen backbone, stage-2 masking, simulator, loss."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder

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
        dataset="fdrd" if task == "itr" else "domainnet",
        protocol="itr" if task == "itr" else "ucdr",
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


def _reference_simulator(sim, pixels, prefix):
    """The stage-2 ViT as METHODS §1.6 states it, through HF's own CLIPEncoder: own bias-free patch embedding
    (stride P) + own positions, [prefix, patches], ln_pre, 2 layers with W/64 heads, ln_post at positions
    0 and 1, W x W projection."""
    width = sim.proj.shape[0]
    config = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_attention_heads=width // 64,
                              num_hidden_layers=2, hidden_act="quick_gelu", attn_implementation="eager")
    encoder = CLIPEncoder(config).eval()
    encoder.layers.load_state_dict(sim.layers.state_dict())
    patch = sim.patch_embedding.weight.shape[-1]
    x = F.conv2d(pixels, sim.patch_embedding.weight, stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([prefix, x + sim.position_embedding], dim=1)
    h = encoder(inputs_embeds=sim.ln_pre(x)).last_hidden_state
    return sim.ln_post(h[:, :2]) @ sim.proj


def test_simulator_matches_a_clip_encoder_with_w_over_64_heads():
    from xdomain_bench.methods.pros import PromptSimulator
    from xdomain_bench.vlm.sizes import VLMSizes

    sizes = VLMSizes(vision_width=192, text_width=48, embed_dim=32, vision_layers=2, text_layers=2, vision_heads=4,
                     text_heads=4, patch_size=8, image_size=32, context_length=77)
    torch.manual_seed(0)
    sim = PromptSimulator(sizes).eval()
    g = torch.Generator().manual_seed(3)
    pixels, prefix = torch.randn(3, 3, 32, 32, generator=g), torch.randn(3, 9, 192, generator=g)
    with torch.no_grad():
        got, ref = sim(pixels, prefix), _reference_simulator(sim, pixels, prefix)
        assert sim.layers[0].self_attn.num_heads == 3  # 192 / 64
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        prefix[:, 0] += torch.randn(192, generator=g)  # the first output reads position 0 (the domain template)
        assert not torch.allclose(sim(pixels, prefix)[:, 0], got[:, 0], atol=1e-3)


def test_stage2_prompts_are_the_simulator_over_templates_and_masked_units(vlm):
    m = make_method(vlm).eval()
    with torch.no_grad():
        m.templates.add_(torch.randn_like(m.templates))
    b = make_batch(vlm)
    px, dom, lab = b["pixels"], b["domain_id"], b["label"]
    rows = torch.arange(6)
    dp = m.domain_bank.detach().expand(6, -1, -1).clone()
    sp = m.class_bank.detach().expand(6, -1, -1).clone()
    dp[rows, dom], sp[rows, lab] = 0.0, 0.0  # each sample's own units zeroed
    with torch.no_grad():
        for prompts, (d, c) in ((m.generate_prompts(px, dom, lab), (dp, sp)),
                                (m.generate_prompts(px), (m.domain_bank.expand(6, -1, -1),
                                                          m.class_bank.expand(6, -1, -1)))):
            prefix = torch.cat([m.templates.expand(6, -1, -1), d, c], dim=1)
            torch.testing.assert_close(prompts, _reference_simulator(m.simulator, px, prefix), rtol=1e-5, atol=1e-5)


def test_captions_go_through_the_trained_text_projection(vlm):
    from xdomain_bench.methods.selection import embed_texts

    m = make_method(vlm, info=make_info(domains=("fdrd",), task="itr")).eval()
    assert m.changed_embeddings() == "both"
    with torch.no_grad():
        m.proj_t.add_(0.2 * torch.randn_like(m.proj_t))  # as after training
    captions = ["a small black cat", "a red plane on a 3 x 4 grid", "a dog"]
    tokens = vlm.tokenize(captions)
    with torch.no_grad():  # HF's own text transformer, pooled at EOT, then the method's proj_t
        hidden = vlm.clip.text_model(input_ids=tokens.ids).last_hidden_state
        pooled = hidden[torch.arange(len(captions)), tokens.eot]
    got = embed_texts(m, captions)  # what the evaluator calls
    torch.testing.assert_close(got, pooled @ m.proj_t.detach(), rtol=1e-5, atol=1e-5)
    frozen = vlm.clip.text_projection(pooled)
    assert not torch.allclose(got, frozen, atol=1e-3)  # the frozen proj_t would fail the check above


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


def test_merge_val_classes_is_on_for_pros_on_domainnet_only():
    for variant in ("paper", "released_code"):
        assert resolve_config("pros", variant, "domainnet")["merge_val_classes"] is True
        assert resolve_config("ucdr_adapter", variant, "domainnet")["merge_val_classes"] is False  # §2.8: 245
    assert resolve_config("pros", None, "sketchy")["merge_val_classes"] is False
    pros, ucdr = get_method_class("pros"), get_method_class("ucdr_adapter")
    assert pros.data_requests(resolve_config("pros", None, "domainnet")) == {"merge_val_classes": True}
    assert ucdr.data_requests(resolve_config("ucdr_adapter", None, "domainnet")) == {}
    on = resolve_config("ucdr_adapter", None, "domainnet", {"merge_val_classes": True})
    assert ucdr.data_requests(on) == {"merge_val_classes": True}


def test_a_data_option_contradicting_the_card_is_an_error():
    from xdomain_bench.errors import ConfigError
    from xdomain_bench.runner.execute import cell_data_options
    from xdomain_bench.runner.records import Cell

    cfg = resolve_config("pros", None, "domainnet")
    cell = Cell(method="pros", dataset="domainnet", protocol="ucdr", variant="clean", holdout="sketch",
                data_options={"merge_val_classes": False})
    with pytest.raises(ConfigError, match="contradicts pros's config"):
        cell_data_options(cell, get_method_class("pros"), cfg)
    ok = Cell(method="pros", dataset="domainnet", protocol="ucdr", variant="clean", holdout="sketch")
    assert cell_data_options(ok, get_method_class("pros"), cfg) == ({"merge_val_classes": True}, False)


@pytest.mark.slow
def test_pros_on_domainnet_trains_on_300_classes_without_val_selection(synth_domainnet, tmp_path, tiny_vlm):
    from xdomain_bench.cli import main

    argv = ["run", "--method", "pros", "--dataset", "domainnet", "--data-root", str(synth_domainnet),
            "--out", str(tmp_path), "--max-steps", "2", "--no-progress"]
    assert main(argv) == 0
    (path,) = (tmp_path / "records").glob("pros_domainnet_*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert rec["notes"]["num_classes"] == 300 and rec["method_config"]["merge_val_classes"] is True
    s = tiny_vlm.sizes  # stage 1 trains DP (K x W), SP (C x W), the text context (m x T) and proj_t (T x E)
    k, m = 5, int(rec["method_config"]["n_ctx"])  # K: the four training query domains and real
    assert rec["notes"]["num_domains"] == k
    assert rec["trainable_params"]["stage1"] == k * s.vision_width + 300 * s.vision_width + m * s.text_width \
        + s.text_width * s.embed_dim
    assert rec["manifest"]["counts"]["val_query"] == 0 and rec["selection"]["split"] is None
    assert all(p["selected"]["split"] is None for p in rec["training"]["phases"])
