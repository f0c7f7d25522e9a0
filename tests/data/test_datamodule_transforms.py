"""Transforms (box mapping checked against the pixels themselves) and the domain-balanced sampler."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from xdomain_bench.data.samplers import DomainBalancedBatchSampler
from xdomain_bench.data.transforms import EvalTransform, TrainTransform
from xdomain_bench.vlm.preprocess import ImagePreprocess

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def red_box_image(size=(100, 50), box=(30, 10, 50, 40)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(255, 0, 0))
    return img


def assert_box_matches_pixels(pixels: torch.Tensor, box: torch.Tensor, margin: float = 1.5) -> None:
    """Pixels well inside the mapped box are red (G ~ 0); pixels well outside are white (G ~ 1)."""
    s = pixels.shape[-1]
    green = pixels[1]
    x0, y0, x1, y1 = (box * s).tolist()
    centres = torch.arange(s, dtype=torch.float32) + 0.5
    inside_x = (centres > x0 + margin) & (centres < x1 - margin)
    inside_y = (centres > y0 + margin) & (centres < y1 - margin)
    outside_x = (centres < x0 - margin) | (centres > x1 + margin)
    outside_y = (centres < y0 - margin) | (centres > y1 + margin)
    inside = inside_y[:, None] & inside_x[None, :]
    outside = outside_y[:, None] | outside_x[None, :]
    assert inside.any() and outside.any()
    assert green[inside].max() < 0.15
    assert green[outside].min() > 0.85


def test_eval_transform_shape_normalisation_and_known_box():
    pp = ImagePreprocess(image_size=32, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    x, box = EvalTransform(pp)(Image.new("RGB", (100, 50), (255, 255, 255)), (25, 0, 75, 50))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(32, 32)) and torch.allclose(x[1], torch.full((32, 32), 3.0))
    # short side 50 -> 32, long side 100 -> 64, centre crop drops 16 px each side: the box fills the crop
    assert torch.allclose(box, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    _, box = EvalTransform(pp)(red_box_image(), (30, 10, 50, 40))
    assert torch.allclose(box, torch.tensor([0.1, 0.2, 0.5, 0.8]), atol=1e-6)
    _, gone = EvalTransform(pp)(red_box_image(), (0, 0, 25, 50))  # entirely in the cropped-away strip
    assert torch.isnan(gone).all()
    _, none = EvalTransform(pp)(red_box_image(), None)
    assert torch.isnan(none).all()


@pytest.mark.parametrize("short", [None, 48])
def test_eval_box_matches_pixels(short):
    pp = ImagePreprocess(image_size=32, resize_short_side=short, **PLAIN)
    x, box = EvalTransform(pp)(red_box_image(), (30, 10, 50, 40))
    assert_box_matches_pixels(x, box)


def test_train_transform_box_follows_crop_and_flip():
    tf = TrainTransform(ImagePreprocess(image_size=32, **PLAIN))
    flips, boxes = 0, set()
    img = red_box_image((100, 80), (20, 10, 50, 60))  # near-square: the random crop never falls back
    for seed in range(24):
        g = torch.Generator().manual_seed(seed)
        x, box = tf(img, (20, 10, 50, 60), generator=g)
        boxes.add(tuple(box.tolist()))
        assert x.shape == (3, 32, 32)
        assert_box_matches_pixels(x, box)
        flips += int(box[0] + box[2] > 1.0)  # the box sits left of centre unless flipped
    assert 4 <= flips <= 20 and len(boxes) == 24


def test_train_transform_is_reproducible_and_in_range():
    tf = TrainTransform(ImagePreprocess(image_size=16, **PLAIN))
    img = red_box_image((100, 80), (20, 10, 50, 60))
    a = tf(img, (20, 10, 50, 60), generator=torch.Generator().manual_seed(3))
    b = tf(img, (20, 10, 50, 60), generator=torch.Generator().manual_seed(3))
    c = tf(img, (20, 10, 50, 60), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    torch.manual_seed(11)  # the global RNG (what seed_everything(workers=True) seeds) is used by default
    d = tf(img, (20, 10, 50, 60))
    torch.manual_seed(11)
    assert torch.equal(d[0], tf(img, (20, 10, 50, 60))[0])
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        left, top, w, h = tf.crop_params(400, 300, g)
        assert 0 <= left and left + w <= 400 and 0 <= top and top + h <= 300
        assert 0.8 * 120000 * 0.98 <= w * h <= 120000
        assert 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03
    # a 2:1 image admits no crop of >= 80 % area with ratio <= 4/3: torchvision's centred fallback
    assert tf.crop_params(100, 50, g) == (16, 0, 67, 50)


def _batches(sampler):
    return [list(b) for b in sampler]


def test_domain_balanced_sampler_composition_and_determinism():
    domains = [0] * 50 + [1] * 7 + [2] * 20  # unbalanced; 77 samples
    s = DomainBalancedBatchSampler(domains, batch_size=9, seed=5)
    batches = _batches(s)
    assert len(batches) == len(s) == 77 // 9
    for b in batches:
        assert len(b) == 9 and Counter(domains[i] for i in b) == {0: 3, 1: 3, 2: 3}
    small = [i for b in batches for i in b if domains[i] == 1]
    assert set(small) == set(range(50, 57))  # the small domain is cycled (oversampled)
    assert _batches(DomainBalancedBatchSampler(domains, 9, seed=5)) == batches
    assert _batches(DomainBalancedBatchSampler(domains, 9, seed=6)) != batches
    second = _batches(s)  # a new pass is a new epoch...
    assert second != batches
    loader = DataLoader(list(range(77)), batch_sampler=s)
    _set_sampler_epoch(loader, 1)  # ...and Lightning pins it (through batch_sampler.sampler.set_epoch)
    assert _batches(s) == second
    s.set_epoch(0)
    assert _batches(s) == batches


def test_domain_balanced_sampler_remainder_rotates_and_shards():
    domains = [0, 1, 2] * 20
    s = DomainBalancedBatchSampler(domains, batch_size=4, seed=0)
    per_domain = Counter(domains[i] for b in _batches(s) for i in b)
    assert max(per_domain.values()) - min(per_domain.values()) <= 1
    r0 = DomainBalancedBatchSampler(domains, 4, seed=0, num_replicas=2, rank=0)
    r1 = DomainBalancedBatchSampler(domains, 4, seed=0, num_replicas=2, rank=1)
    full = _batches(DomainBalancedBatchSampler(domains, batch_size=4, seed=0))
    assert _batches(r0) == full[0::2] and _batches(r1) == full[1::2]
    assert len(r0) + len(r1) == len(s)
    tiny = DomainBalancedBatchSampler([0, 1], batch_size=8, seed=0)
    assert len(_batches(tiny)) == 1 and sorted(np.bincount(_batches(tiny)[0])) == [4, 4]
    assert not math.isnan(len(tiny))
