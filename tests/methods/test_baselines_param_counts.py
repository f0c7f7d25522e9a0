"""Trainable-parameter counts on ViT-B/16 shapes equal METHODS.md's formulas (§1.6, §2.2, §6).

One `tiny-clip:preset=vit-b-16` backbone (random weights, B/16 shapes) is built for all five methods.
DomainNet UCDR sizes: K = 5 training domains, C = 245 training classes.
"""

from __future__ import annotations

import pytest

from xdomain_bench.data.info import DataInfo
from xdomain_bench.methods.base import get_method_class
from xdomain_bench.methods.config import resolve_config
from xdomain_bench.vlm import load_backbone

K, C = 5, 245


@pytest.fixture(scope="module")
def vlm():
    return load_backbone("tiny-clip:preset=vit-b-16")


@pytest.fixture(scope="module")
def info():
    names = [f"class {i}" for i in range(C + 100)]
    return DataInfo(
        dataset="domainnet",
        protocol="ucdr",
        variant="clean",
        holdout="sketch",
        class_names=names,
        train_class_ids=list(range(C)),
        train_domains=["clipart", "infograph", "painting", "quickdraw", "real"][:K],
        task="class",
        same_set=False,
        has_captions=False,
        has_boxes=False,
        primary_metric="mAP@200",
        metrics=("mAP@200",),
        selection_metric="mAP@200",
        inverted_domains=(),
    )


def counts(vlm, info, name):
    method = get_method_class(name)(vlm, info, resolve_config(name, None, "domainnet"))
    return method.trainable_counts()


def test_sizes_are_vit_b_16(vlm):
    s = vlm.sizes
    assert (s.vision_width, s.text_width, s.embed_dim, s.patch_size, s.num_patches) == (
        768,
        512,
        512,
        16,
        196,
    )


def test_ucdr_adapter_counts(vlm, info):
    s = vlm.sizes
    W, T, E, m = s.vision_width, s.text_width, s.embed_dim, 16
    got = counts(vlm, info, "ucdr_adapter")
    assert got["phase1"] == K * W + C * W + m * T
    assert got["phase2"] == 3 * (W * W + W) + 2 * W + W + W * E
    assert got["total"] == got["phase1"] + got["phase2"]


def test_baseline_counts(vlm, info):
    s = vlm.sizes
    W, T, E = s.vision_width, s.text_width, s.embed_dim
    assert counts(vlm, info, "linear_probe")["total"] == W * E
    assert counts(vlm, info, "coop")["total"] == 16 * T + W * E
    assert counts(vlm, info, "vpt")["total"] == 10 * W + W * E


def test_pros_counts(vlm, info):
    s = vlm.sizes
    W, T, E, P, N = s.vision_width, s.text_width, s.embed_dim, s.patch_size, s.num_patches
    block = 4 * (W * W + W) + (W * 4 * W + 4 * W) + (4 * W * W + W) + 4 * W  # attention, MLP, two LayerNorms
    simulator = (
        3 * P * P * W + N * W + 2 * W + 2 * block + 2 * W + W * W
    )  # patch emb, pos, ln_pre, blocks, ln_post, proj
    got = counts(vlm, info, "pros")
    assert got["stage1"] == K * W + C * W + 16 * T + T * E
    assert got["stage2"] == simulator + 2 * W + 16 * T + T * E + W * E + W
    assert got["total"] == got["stage1"] + got["stage2"] - (
        16 * T + T * E
    )  # context and proj_t train in both


def test_clip_adapter_is_two_bias_free_bottleneck_matrices(vlm, info):
    """§1.6: W₁ (E/4 × E) and W₂ (E × E/4), no biases: 2 · 512 · 128 = 131,072 ≈ 0.13 M at E = 512."""
    assert counts(vlm, info, "clip_adapter") == {"main": 131_072, "total": 131_072}
