"""DVA object boxes and views: the attention-box search against brute force, the box cache, the views."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.attention_boxes import (
    AttentionBoxCache,
    attention_boxes,
    grid_to_normalized,
    smallest_mass_box,
)
from xdomain_bench.methods.dva_views import (
    ViewAugment,
    augment_views,
    background_view,
    object_crop_windows,
    object_view,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids spin-wait stalls on a shared machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def brute_force_box(weights: list[list[int]], share: Fraction) -> tuple[int, int, int, int]:
    """Every grid box, exact rational masses: smallest area, then larger mass, then (r0, c0, r1, c1)."""
    g = len(weights)
    total = sum(map(sum, weights))
    best = None
    for r0 in range(g):
        for c0 in range(g):
            for r1 in range(r0 + 1, g + 1):
                for c1 in range(c0 + 1, g + 1):
                    mass = Fraction(sum(weights[r][c] for r in range(r0, r1) for c in range(c0, c1)), total)
                    if mass < share:
                        continue
                    key = ((r1 - r0) * (c1 - c0), -mass, r0, c0, r1, c1)
                    best = key if best is None or key < best else best
    _, _, r0, c0, r1, c1 = best
    return c0, r0, c1, r1


def as_map(weights: list[list[int]]) -> torch.Tensor:
    return torch.tensor(weights, dtype=torch.float32)


def test_known_blob_gives_exactly_the_blob():
    # 6 blob cells of weight 8 (48 of 64) plus 16 scattered ones: only the whole 3x2 blob reaches 0.6
    w = [[0] * 8 for _ in range(8)]
    for r in range(2, 5):
        for c in range(5, 7):
            w[r][c] = 8
    for r, c in [(0, 0), (0, 3), (1, 1), (7, 7), (6, 0), (5, 2), (7, 3), (3, 0),
                 (0, 7), (6, 6), (4, 1), (2, 2), (7, 1), (1, 6), (5, 4), (3, 3)]:
        w[r][c] += 1
    assert sum(map(sum, w)) == 64
    expected = brute_force_box(w, Fraction(3, 5))
    assert expected == (5, 2, 7, 5)  # xyxy in cells: columns 5-6, rows 2-4
    assert tuple(smallest_mass_box(as_map(w), 0.6).tolist()) == expected


def test_ties_prefer_larger_mass_then_top_left():
    w = [[0] * 6 for _ in range(6)]
    w[0][0] = w[0][1] = 16  # top-left pair: 32 of 64
    w[5][4] = w[5][5] = 16  # bottom-right pair: 32 of 64
    assert tuple(smallest_mass_box(as_map(w), 0.5).tolist()) == (0, 0, 2, 1) == brute_force_box(w, Fraction(1, 2))
    w = [[1] * 6 for _ in range(6)]
    for r, c in [(2, 2), (2, 3), (3, 2), (3, 3)]:
        w[r][c] = 0
    w[0][0], w[0][1] = 8, 9  # top-left pair: 17 of 64
    w[4][4], w[4][5] = 9, 10  # bottom-right pair: 19 of 64; no single cell reaches 16
    assert sum(map(sum, w)) == 64
    share = Fraction(1, 4)
    got = tuple(smallest_mass_box(as_map(w), float(share)).tolist())
    assert got == brute_force_box(w, share)
    assert got == (4, 4, 6, 5)  # equal area 2: the larger mass wins over the top-left box


@pytest.mark.parametrize("seed", range(4))
def test_random_maps_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    g = 7
    w = torch.randint(0, 6, (g, g), generator=gen)
    w[torch.randint(0, g, (1,), generator=gen), torch.randint(0, g, (1,), generator=gen)] += 256 - int(w.sum())
    assert int(w.sum()) == 256  # power-of-two total: float masses are exact, no rounding at the threshold
    weights = w.tolist()
    for share in (Fraction(3, 5), Fraction(9, 10)):
        assert tuple(smallest_mass_box(w.float(), float(share)).tolist()) == brute_force_box(weights, share)


def test_batched_and_degenerate_maps():
    maps = torch.zeros(3, 5, 5)
    maps[0, 1:3, 2:4] = 1.0  # support = rows 1-2, columns 2-3
    maps[2] = float("nan")
    boxes = smallest_mass_box(maps, 1.0)
    assert boxes[0].tolist() == [2, 1, 4, 3]  # share 1: the bounding box of the support
    assert boxes[1].tolist() == [0, 0, 5, 5]  # all-zero map counts as uniform
    assert boxes[2].tolist() == [0, 0, 5, 5]


def test_grid_to_normalized_enlarges_and_clips():
    got = grid_to_normalized(torch.tensor([[1, 1, 3, 2], [0, 0, 4, 4]]), grid=4, enlarge=1.1)
    # centre (0.5, 0.375), size 0.5 x 0.25 -> 0.55 x 0.275; the full grid stays the full image
    expected = torch.tensor([[0.225, 0.2375, 0.775, 0.5125], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(got, expected)


class BrightnessAttention:
    """Stands in for H10: a G×G map that follows patch brightness (a model attending to the object)."""

    def __init__(self, patch: int) -> None:
        self.patch = patch
        self.calls = 0

    def class_attention_map(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        bright = F.avg_pool2d(pixels.mean(dim=1, keepdim=True), self.patch).squeeze(1)
        weights = torch.exp(8.0 * bright)
        return weights / weights.sum(dim=(1, 2), keepdim=True)


def planted_image(x0: int, y0: int, x1: int, y1: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(3, size, size, generator=gen) * 0.1 - 1.0
    img[:, y0:y1, x0:x1] = 2.0
    return img


def test_attention_box_contains_planted_object():
    # 64 px, patch 8 (G = 8). The box holds 60% of the attention, so objects are planted at patch scale:
    # inside one cell (top right), two cells tall (bottom left: catches swapped rows/columns), and
    # straddling a grid corner (a quarter of the mass in each of four cells: only the 2x2 box holds 60%).
    objects = [(42, 10, 47, 15), (8, 40, 16, 56), (36, 20, 44, 28)]
    pixels = torch.stack([planted_image(*o, seed=i) for i, o in enumerate(objects)])
    boxes = attention_boxes(BrightnessAttention(patch=8), pixels, share=0.6, enlarge=1.1)
    target = torch.tensor(objects, dtype=torch.float32) / 64
    assert bool((boxes[:, :2] <= target[:, :2]).all() and (boxes[:, 2:] >= target[:, 2:]).all())
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert bool((area < 0.1).all())  # tight around the object, not the whole image
    assert boxes[0, 0] > 0.5 and boxes[0, 3] < 0.5 and boxes[1, 2] < 0.5 and boxes[1, 1] > 0.5


def test_real_backbone_box_holds_the_share(tiny_vlm):
    pixels = torch.randn(3, 3, tiny_vlm.sizes.image_size, tiny_vlm.sizes.image_size, generator=torch.Generator().manual_seed(0))
    attn = tiny_vlm.class_attention_map(pixels)
    grid = smallest_mass_box(attn, 0.6)
    for a, (c0, r0, c1, r1) in zip(attn, grid.tolist()):
        assert float(a[r0:r1, c0:c1].sum() / a.sum()) >= 0.6
    boxes = attention_boxes(tiny_vlm, pixels)
    torch.testing.assert_close(boxes, grid_to_normalized(grid, tiny_vlm.sizes.grid, 1.1))


def test_box_cache_modes():
    vlm = BrightnessAttention(patch=8)
    first = torch.stack([planted_image(40, 8, 56, 32), planted_image(0, 40, 24, 56)])
    moved = torch.stack([planted_image(0, 0, 16, 16), planted_image(40, 40, 64, 64)])
    cache = AttentionBoxCache("index")
    a = cache.boxes(vlm, first, index=[3, 7])
    b = cache.boxes(vlm, moved, index=[7, 3])  # same rows: the first-seen view's boxes come back
    assert torch.equal(b, a.flip(0)) and vlm.calls == 1 and cache.state()["hits"] == 2
    fresh = AttentionBoxCache("none")
    assert not torch.equal(fresh.boxes(vlm, moved, index=[7, 3]), b) and vlm.calls == 2
    by_pixels = AttentionBoxCache("pixels")
    c = by_pixels.boxes(vlm, first)
    assert torch.equal(by_pixels.boxes(vlm, first.clone()), c) and vlm.calls == 3
    by_pixels.boxes(vlm, moved)
    assert vlm.calls == 4 and by_pixels.state()["cached"] == 4


def test_object_crop_windows_hand_computed():
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.75],  # 8x16 px at (8, 8): square 16 about x = 12
                          [0.875, 0.0, 1.0, 0.5],  # at the right edge: shifted inside
                          [0.0, 0.0, 1.0, 1.0]])
    assert object_crop_windows(boxes, 32, 32).tolist() == [[4, 8, 20, 24], [16, 0, 32, 16], [0, 0, 32, 32]]
    assert object_crop_windows(boxes[:1], 32, 32, aspect=0.75).tolist() == [[6, 8, 18, 24]]  # 3:4 (w:h)


def test_object_and_background_views():
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32, generator=gen)
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0]])
    obj = object_view(pixels, boxes)
    expected = F.interpolate(pixels[:1, :, 8:24, 4:20], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(obj[:1], expected)
    assert torch.equal(obj[1], pixels[1])  # a full-image box leaves the image as it is
    bg = background_view(pixels, boxes)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 8:16] = True  # pixel centres within x in [8, 16], y in [8, 24] px
    assert torch.equal(bg[0][:, inside], torch.zeros(3, int(inside.sum())))
    assert torch.equal(bg[0][:, ~inside], pixels[0][:, ~inside])
    assert torch.equal(bg[1], torch.zeros_like(bg[1]))


def test_view_augmentation():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(16, 3, 32, 32, generator=gen)
    off = ViewAugment(crop=1.0, flip=0.0, jitter=0.0, grayscale=0.0, blur=0.0)
    assert augment_views(pixels, off, mean, std) is pixels
    flipped = augment_views(pixels, ViewAugment(crop=1.0, flip=1.0, jitter=0, grayscale=0, blur=0), mean, std)
    assert torch.equal(flipped, pixels.flip(-1))
    torch.manual_seed(0)
    same = pixels[:1].expand(16, -1, -1, -1)
    out = augment_views(same, ViewAugment(), mean, std)
    assert out.shape == same.shape and bool(torch.isfinite(out).all())
    distinct = {tuple(o.flatten()[:64].tolist()) for o in out}
    assert len(distinct) > 8  # independent draws per image
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    raw = out * s + m
    assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5  # colour ops stay in [0, 1]
    with pytest.raises(ConfigError, match=r"unknown view_augment keys \['hue'\]") as exc:
        ViewAugment.from_config({"hue": 0.1, "flip": 0.5})
    assert type(exc.value) is ConfigError
