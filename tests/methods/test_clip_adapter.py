"""CLIP-Adapter (METHODS.md §1.6): the residual blend by hand, frozen backbone, trainable adapter, loss falls."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdomain_bench.methods.base import get_method_class
from xdomain_bench.methods.config import resolve_config

from .test_ucdr_adapter import make_batch, make_info, step


def build(vlm, task="class"):
    torch.manual_seed(0)
    return get_method_class("clip_adapter")(vlm, make_info(task=task), resolve_config("clip_adapter"))


def test_embedding_is_the_residual_blend_written_out(tiny_vlm):
    m = build(tiny_vlm)
    with torch.no_grad():
        for p in m.adapter.parameters():
            p.normal_(0, 0.5)
    batch = make_batch(tiny_vlm)
    w1, w2 = m.adapter.net[0].weight, m.adapter.net[2].weight
    with torch.no_grad():
        f = tiny_vlm.encode_image(batch["pixels"]).float()
        hand = 0.2 * torch.relu(torch.relu(f @ w1.t()) @ w2.t()) + 0.8 * f
        torch.testing.assert_close(m.embed_images(batch), F.normalize(hand, dim=-1))
        # cached post-projection features give the same embedding as pixels (H14)
        torch.testing.assert_close(m.embed_images({"features": f}), F.normalize(hand, dim=-1))
    assert w1.shape == (tiny_vlm.sizes.embed_dim // 4, tiny_vlm.sizes.embed_dim) and m.adapter.net[0].bias is None


def test_training_changes_the_adapter_only_and_the_loss_falls(tiny_vlm):
    m = build(tiny_vlm)
    m.set_phase("main")
    m.train()
    frozen = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("vlm.")}
    before = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("vlm.")}
    batch = make_batch(tiny_vlm, seed=3)
    losses = [step(m, batch, lr=2e-2)[0] for _ in range(20)]  # a fresh Adam step each time (test_ucdr_adapter)
    assert losses[-1] < losses[0] - 0.05, losses
    assert {n for n, p in m.named_parameters() if not n.startswith("vlm.") and not torch.equal(before[n], p)} == set(before)
    for k, v in m.state_dict().items():
        if k.startswith("vlm."):
            assert torch.equal(v, frozen[k]), k


def test_caption_data_trains_with_frozen_caption_features(tiny_vlm):
    m = build(tiny_vlm, task="itr")
    batch = make_batch(tiny_vlm)
    batch["caption"] = ["a red apple", "a small ant", "a red apple", "a dog", "a cat", "a plane"]
    m.train()
    loss, _ = m.training_loss(batch)
    loss.backward()
    assert m.adapter.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in m.named_parameters() if n.startswith("vlm."))
