"""Training state that the state dict leaves out survives a resume checkpoint (issue 17): UCDR-Adapter's
momentum branch and class queues, DCAR's negatives generator, DVA's attention-box cache. Each test saves a
trained method the way Lightning does (on_save_checkpoint, torch.save), loads it into a fresh one built
the same way, and checks that the next training step is the same as in the method that was never stopped."""

from __future__ import annotations

import io

import pytest
import torch

from xdomain_bench.data.info import DataInfo
from xdomain_bench.methods.base import get_method_class
from xdomain_bench.methods.config import resolve_config

NAMES = ["cat", "dog", "ice_cream", "airplane", "pug"]


def info(task: str = "class", dataset: str = "domainnet", domains=("clipart", "painting", "real")) -> DataInfo:
    return DataInfo(dataset=dataset, protocol="p", variant="clean", holdout=None, class_names=NAMES,
                    train_class_ids=list(range(len(NAMES))), train_domains=list(domains), task=task,
                    same_set=False, has_captions=task == "itr", has_boxes=False, primary_metric="R@1",
                    metrics=("R@1",), selection_metric="R@1", inverted_domains=())


def build(vlm, name: str, data: DataInfo, **overrides):
    torch.manual_seed(0)
    method = get_method_class(name)(vlm, data, resolve_config(name, None, data.dataset, overrides))
    method.set_phase(method.phases()[0])
    return method.train()


def batch(vlm, seed: int, n: int = 6) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = vlm.sizes.image_size
    return {"pixels": torch.randn(n, 3, s, s, generator=g), "label": torch.arange(n) % len(NAMES),
            "class_id": torch.arange(n) % len(NAMES), "domain_id": torch.arange(n) % 3, "index": torch.arange(n),
            "caption": [f"a photo of a {NAMES[i % len(NAMES)]} on a red rug" for i in range(n)],
            "negatives": [[] for _ in range(n)], "box": torch.full((n, 4), float("nan"))}


def resumed(method, fresh):
    """`fresh` loaded from a checkpoint of `method`, through bytes and the safe loader."""
    ckpt = {"state_dict": method.state_dict()}
    method.on_save_checkpoint(ckpt)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    return fresh


def next_loss(method, seed: int) -> float:
    torch.manual_seed(123)
    with torch.no_grad():
        return float(method.training_loss(batch(method.vlm, seed))[0])


def test_ucdr_adapter_phase1_queues_and_momentum_branch_survive(tiny_vlm):
    m = build(tiny_vlm, "ucdr_adapter", info())
    with torch.no_grad():
        for seed in range(3):
            m.class_bank.add_(0.01 * seed)  # the banks move, so the momentum copy lags behind them
            m.training_loss(batch(tiny_vlm, seed))
    assert int(m.queues.count.sum()) > 0
    fresh = resumed(m, build(tiny_vlm, "ucdr_adapter", info()))
    for key in ("queues.feats", "queues.count", "queues.head", "momentum_branch.ema_class_bank"):
        assert torch.equal(dict(fresh.named_buffers())[key], dict(m.named_buffers())[key]), key
    assert next_loss(fresh, 7) == next_loss(m, 7)
    assert next_loss(build(tiny_vlm, "ucdr_adapter", info()), 7) != next_loss(m, 7)  # what the queues change


def test_dcar_negatives_generator_survives(tiny_vlm):
    data = info("itr", "fdrd", ("photo",))
    m = build(tiny_vlm, "dcar", data, negatives="released")
    with torch.no_grad():
        m.training_loss(batch(tiny_vlm, 0))
    fresh = resumed(m, build(tiny_vlm, "dcar", data, negatives="released"))
    assert torch.equal(fresh.negatives.generator.get_state(), m.negatives.generator.get_state())
    assert fresh.negatives.templated([0, 1, 2]) == m.negatives.templated([0, 1, 2])
    unresumed = build(tiny_vlm, "dcar", data, negatives="released")
    assert unresumed.negatives.templated([0, 1, 2]) != fresh.negatives.templated([0, 1, 2])


@pytest.mark.parametrize("mode", ["index", "pixels"])
def test_dva_attention_box_cache_survives(tiny_vlm, mode):
    data = info(dataset="cub", domains=("photo",))
    m = build(tiny_vlm, "dva", data, attention_box_cache=mode)
    first = m.object_boxes(batch(tiny_vlm, 0))
    fresh = resumed(m, build(tiny_vlm, "dva", data, attention_box_cache=mode))
    assert fresh.box_cache.state() == m.box_cache.state() and fresh.box_cache.state()["cached"] == 6
    assert {k: fresh.notes[k] for k in ("boxes_attention", "attention_box_cache")} == \
        {k: m.notes[k] for k in ("boxes_attention", "attention_box_cache")}
    again = batch(tiny_vlm, 0) if mode == "pixels" else batch(tiny_vlm, 1)  # index mode: same rows, new views
    boxes = fresh.object_boxes(again)
    assert torch.equal(boxes, first) and torch.equal(boxes, m.object_boxes(again))
    assert (fresh.box_cache.hits, fresh.box_cache.computed) == (6, 6)  # every box from the restored cache
