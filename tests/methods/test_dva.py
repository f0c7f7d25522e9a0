"""DVA on tiny-clip: zero-init equivalence, what trains and what stays frozen, losses, parameter shares."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

from xdomain_bench.data.info import DataInfo
from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.base import build_optimizer, get_method_class
from xdomain_bench.methods.config import resolve_config
from xdomain_bench.methods.dva import DVA, distillation_loss, pairwise_loss, proxy_logits, proxy_loss
from xdomain_bench.paths import dataset_cards_dir

NO_AUG = {"crop": 1.0, "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0}
NAMES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids spin-wait stalls on a shared machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def make_info(task: str = "class", has_boxes: bool = True, names: list[str] = NAMES,
              train: list[int] | None = None, domains: tuple[str, ...] = ("photo",)) -> DataInfo:
    return DataInfo(dataset="cub" if task == "class" else "fdrd", protocol="p", variant="clean", holdout=None,
                    class_names=list(names), train_class_ids=train if train is not None else [0, 1, 2],
                    train_domains=list(domains), task=task, same_set=task == "class", has_captions=task == "itr",
                    has_boxes=has_boxes, primary_metric="R@1", metrics=("R@1",), selection_metric="R@1",
                    inverted_domains=())


def make_dva(vlm, info: DataInfo | None = None, **overrides) -> DVA:
    torch.manual_seed(0)
    return DVA(vlm, info or make_info(), resolve_config("dva", overrides=overrides))


def make_batch(vlm, b: int = 6, seed: int = 0, boxes: bool = True) -> dict:
    gen = torch.Generator().manual_seed(seed)
    s = vlm.sizes.image_size
    box = torch.tensor([[0.1, 0.2, 0.6, 0.9]] * (b // 2) + [[float("nan")] * 4] * (b - b // 2))
    return {"pixels": torch.randn(b, 3, s, s, generator=gen), "label": torch.arange(b) % 3,
            "class_id": torch.arange(b) % 3, "domain_id": torch.zeros(b, dtype=torch.long),
            "index": torch.arange(b), "box": box if boxes else torch.full((b, 4), float("nan"))}


def backbone_snapshot(vlm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vlm.state_dict(keep_vars=True).items()}


def test_registered_and_card_resolves():
    assert get_method_class("dva") is DVA
    cfg = resolve_config("dva", variant="no_view_augment")
    assert cfg["view_augment"] == {**cfg["view_augment"], **NO_AUG} and cfg["lambdas"]["kd"] == 1.0
    assert resolve_config("dva", variant="with_pairwise")["lambdas"] == {"x": 1.0, "obj": 1.0, "bg": 1.0,
                                                                         "kd": 1.0, "con": 1.0}


def test_zero_init_adapters_reproduce_the_frozen_encoder(tiny_vlm):
    m = make_dva(tiny_vlm)
    pixels = make_batch(tiny_vlm)["pixels"]
    frozen = tiny_vlm.encode_image(pixels)
    assert torch.equal(m.encode(pixels), frozen)
    assert torch.equal(m.embed_images({"pixels": pixels}), F.normalize(frozen.float(), dim=-1))
    texts = ["a photo of a bird.", "a small grey albatross over the sea."]
    assert torch.equal(m.embed_texts(texts), F.normalize(tiny_vlm.encode_text(texts).float(), dim=-1))


def test_proxies_start_at_the_class_prompt_features(tiny_vlm):
    m = make_dva(tiny_vlm)
    prompts = ["a photo of a Black footed Albatross.", "a photo of a Laysan Albatross.",
               "a photo of a Sooty Albatross."]
    expected = F.normalize(tiny_vlm.encode_text(prompts).float(), dim=-1)
    torch.testing.assert_close(m.proxies.detach(), expected, rtol=0, atol=1e-6)
    assert m.proxies.shape == (3, tiny_vlm.sizes.embed_dim)


def test_a_step_trains_adapters_and_proxies_only(tiny_vlm, tmp_path):
    """Real Lightning fit (AdamW, two groups, warm-up + cosine): trainable parts move, the backbone does not."""
    m = make_dva(tiny_vlm, view_augment=NO_AUG)
    m.set_phase("main")
    before_vlm = backbone_snapshot(tiny_vlm)
    before = {k: v.detach().clone() for k, v in m.trainable_state_dict().items()}
    assert set(before) == {"proxies", *(f"{s}_adapters.{i}.{w}.weight" for s in "qk"
                                        for i in range(tiny_vlm.sizes.vision_layers) for w in ("down", "up"))}
    batch = make_batch(tiny_vlm)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(m, train_dataloaders=DataLoader([batch, batch], batch_size=None))
    after = m.trainable_state_dict()
    for key, value in before.items():
        assert not torch.equal(after[key], value), f"{key} did not change"
    for key, value in backbone_snapshot(tiny_vlm).items():
        assert torch.equal(value, before_vlm[key]), f"backbone tensor {key} changed"
    for name, p in tiny_vlm.named_parameters():
        assert p.grad is None and not p.requires_grad, name
    assert not tiny_vlm.training
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert groups["adapters"]["weight_decay"] == 1e-4 and groups["proxies"]["weight_decay"] == 0.0
    assert groups["proxies"]["initial_lr"] == 1e-2 and groups["adapters"]["initial_lr"] == 1e-3


def test_warmup_is_the_card_share_of_the_step_budget(tiny_vlm):
    m = make_dva(tiny_vlm)
    assert "warmup_steps" not in m.phase_config() or m.phase_config()["warmup_steps"] == 0
    m._trainer = SimpleNamespace(estimated_stepping_batches=50)  # 1 of 10 epochs
    try:
        assert m.phase_config()["warmup_steps"] == 5
    finally:
        m._trainer = None


def test_loss_falls_on_a_fixed_batch(tiny_vlm):
    m = make_dva(tiny_vlm, view_augment=NO_AUG)
    m.set_phase("main")
    cfg = m.phase_config()
    opt = build_optimizer(m.optimizer_param_groups(cfg["optimizer"]), cfg["optimizer"])
    batch = make_batch(tiny_vlm, b=8)
    losses = []
    for _ in range(30):
        loss, logs = m.training_loss(batch)
        assert set(logs) == {"proxy_x", "proxy_obj", "proxy_bg", "kd"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    assert m.notes["boxes_annotation"] == 30 * 4 and m.notes["boxes_attention"] == 30 * 4


def test_total_loss_is_the_weighted_sum_of_hand_computed_terms(tiny_vlm):
    m = make_dva(tiny_vlm, view_augment=NO_AUG, lambdas={"x": 0.5, "obj": 2.0, "bg": 0.25, "kd": 3.0, "con": 1.5})
    batch = make_batch(tiny_vlm)
    loss, logs = m.training_loss(batch)
    boxes = m.object_boxes(batch)
    from xdomain_bench.methods.dva_views import background_view, object_view

    views = [batch["pixels"], object_view(batch["pixels"], boxes), background_view(batch["pixels"], boxes)]
    p = F.normalize(m.proxies.detach(), dim=-1)
    y = batch["label"]
    with torch.no_grad():
        feats = [tiny_vlm.encode_image(v, q_adapters=m.q_adapters, k_adapters=m.k_adapters) for v in views]
        z = [F.normalize(f, dim=-1) @ p.t() / 0.1 for f in feats]
    ce = [-(zv.log_softmax(-1)[torch.arange(len(y)), y]).mean() for zv in z]
    p_obj = z[1].softmax(-1)
    kd = (p_obj * (p_obj.log() - z[0].log_softmax(-1))).sum(-1).mean()
    s = F.normalize(feats[0], dim=-1) @ F.normalize(feats[0], dim=-1).t()
    con = sum(float(1 - s[i, j]) if y[i] == y[j] else max(float(s[i, j]) - 0.5, 0.0)
              for i in range(len(y)) for j in range(len(y))) / len(y) ** 2
    expected = 0.5 * ce[0] + 2.0 * ce[1] + 0.25 * ce[2] + 3.0 * kd + 1.5 * con
    for key, value in {"proxy_x": ce[0], "proxy_obj": ce[1], "proxy_bg": ce[2], "kd": kd}.items():
        torch.testing.assert_close(logs[key].detach(), value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(float(logs["con"].detach()), con, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(float(loss), float(expected), rtol=1e-4, atol=1e-5)


def test_distillation_is_zero_for_equal_views(tiny_vlm):
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)) * 3
    assert float(distillation_loss(z, z.clone(), tau=2.0)) == 0.0
    assert float(distillation_loss(z, z.flip(0))) > 0.1
    # end to end: a full-image box makes the object view the plain view
    m = make_dva(tiny_vlm, view_augment=NO_AUG, lambdas={"x": 0.0, "bg": 0.0, "obj": 0.0, "kd": 1.0})
    batch = make_batch(tiny_vlm)
    full = dict(batch, box=torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 6))
    assert abs(float(m.training_loss(full)[1]["kd"])) <= 1e-6
    assert float(m.training_loss(batch)[1]["kd"]) > 1e-5  # a real box gives a real teacher


def test_distillation_gradient_reaches_the_student_only():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None and float(student.grad.abs().sum()) > 0


def test_proxy_and_pairwise_helpers():
    f = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    p = torch.randn(3, 4, generator=torch.Generator().manual_seed(3))
    z = proxy_logits(f, p, 0.1)
    cos = torch.tensor([[float(a @ b / a.norm() / b.norm()) for b in p] for a in f])
    torch.testing.assert_close(z, cos / 0.1)
    y = torch.tensor([0, -1, 2, 1, -1, 0])
    keep = y >= 0
    torch.testing.assert_close(proxy_loss(z, y), F.cross_entropy(z[keep], y[keep]))
    assert float(proxy_loss(z, torch.full((6,), -1))) == 0.0
    same = torch.tensor([0, 0, 1, 1, 1, 2])
    fn = F.normalize(f, dim=-1)
    brute = sum(float(1 - fn[i] @ fn[j]) if same[i] == same[j] else max(float(fn[i] @ fn[j]) - 0.5, 0.0)
                for i in range(6) for j in range(6)) / 36
    assert abs(float(pairwise_loss(f, same)) - brute) < 1e-5


def test_box_sources(tiny_vlm):
    batch = make_batch(tiny_vlm)
    auto = make_dva(tiny_vlm)
    boxes = auto.object_boxes(batch)
    assert torch.equal(boxes[:3], batch["box"][:3]) and bool(torch.isfinite(boxes).all())
    attention = make_dva(tiny_vlm, box_source="attention")
    att = attention.object_boxes(batch)
    assert torch.equal(att[3:], boxes[3:]) and not torch.equal(att[:3], boxes[:3])
    assert attention.notes["boxes_attention"] == 6 and attention.notes["boxes_annotation"] == 0
    with pytest.raises(ConfigError, match="ships no boxes"):
        make_dva(tiny_vlm, make_info(has_boxes=False), box_source="annotation")
    with pytest.raises(ConfigError, match="box_source"):
        make_dva(tiny_vlm, box_source="detector")
    cached = make_dva(tiny_vlm, attention_box_cache="index")
    first = cached.object_boxes(batch)
    moved = dict(batch, pixels=batch["pixels"].flip(-1))
    assert torch.equal(cached.object_boxes(moved), first)  # rows 3-5 come from the cache by index
    assert cached.notes["attention_box_cache"]["hits"] == 3


def test_caption_data_and_frozen_proxies(tiny_vlm):
    info = make_info(task="itr", has_boxes=False, domains=("cars", "birds"))
    m = make_dva(tiny_vlm, info, freeze_proxies=True, view_augment=NO_AUG)
    assert "proxies" not in dict(m.named_parameters()) and m.trainable_counts()["total"] == m.notes["adapter_params"]
    assert m.notes["domain_labels"] == "ignored"
    start = m.proxies.clone()
    m.set_phase("main")
    cfg = m.phase_config()
    opt = build_optimizer(m.optimizer_param_groups(cfg["optimizer"]), cfg["optimizer"])
    batch = dict(make_batch(tiny_vlm, boxes=False), caption=["a bird."] * 6)
    loss, _ = m.training_loss(batch)
    loss.backward()
    opt.step()
    assert torch.equal(m.proxies, start) and "proxies" in m.trainable_state_dict()
    assert m.notes["boxes_attention"] == 6


@pytest.mark.slow
def test_trainable_fraction_vit_b16_cub_open():
    """ViT-B/16 shapes, C = 100 CUB-open proxies: 4·L_v·W·r + C·E trainable parameters."""
    from xdomain_bench.vlm import load_backbone

    vlm = load_backbone("tiny-clip:preset=vit-b-16")
    names = yaml.safe_load((dataset_cards_dir() / "cub.yaml").read_text())["class_names"]
    m = DVA(vlm, make_info(names=names, train=list(range(100))), resolve_config("dva"))
    s = vlm.sizes
    adapters = 4 * s.vision_layers * s.vision_width * 16
    trainable = adapters + 100 * s.embed_dim
    vision = sum(p.numel() for p in vlm.clip.vision_model.parameters()) + vlm.clip.visual_projection.weight.numel()
    backbone = sum(p.numel() for p in vlm.clip.parameters())
    assert m.trainable_counts()["total"] == trainable == m.notes["trainable_params"]
    assert m.notes["adapter_params"] == adapters
    assert m.notes["trainable_fraction"] == trainable / (trainable + backbone)
    assert m.notes["trainable_fraction_vision"] == trainable / vision
    assert 0.005 <= m.notes["trainable_fraction_vision"] <= 0.01  # vision-tower denominator (paper's share)
    assert abs(m.notes["adapter_fraction_vision"] - 0.0068) < 0.0002  # ICA alone: the reported ≈0.68 %
