"""DVA's object view from the full-resolution image: fine detail kept, boxes (file and attention) reaching
the view builder in image pixels, checked against PIL crops and boxes parsed from bounding_boxes.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.datamodule import RetrievalDataModule
from xdomain_bench.errors import ConfigError, DataError
from xdomain_bench.methods import dva as dva_module
from xdomain_bench.methods.dva_views import (
    image_boxes_from_tensor,
    object_view,
    original_object_views,
    tensor_boxes_from_image,
)
from xdomain_bench.vlm.preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocess

from .test_dva import (
    NO_AUG,
    _one_thread,  # noqa: F401  (autouse: one intra-op thread)
    make_batch,
    make_dva,
    make_info,
)


def pil_reference(img: Image.Image, window: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop of the original with PIL, bicubic resize, CLIP normalisation, written out with numpy."""
    arr = np.asarray(img.crop(window).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    arr = (arr - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return torch.from_numpy(arr.transpose(2, 0, 1)).float()


def high_frequency_energy(view: torch.Tensor, cutoff: float = 0.125) -> float:
    """Spectral energy of the channel-mean image above `cutoff` cycles/pixel (mean removed)."""
    g = view.double().mean(dim=0)
    spec = torch.fft.fft2(g - g.mean()).abs() ** 2
    fy = torch.fft.fftfreq(g.shape[0], dtype=torch.float64).abs()
    fx = torch.fft.fftfreq(g.shape[1], dtype=torch.float64).abs()
    high = torch.maximum(fy[:, None], fx[None, :]) > cutoff
    return float(spec[high].sum())


def checker_image(size: int = 512, box: tuple[int, int, int, int] = (192, 192, 320, 320), cell: int = 4):
    """Mid-grey image with a black/white checkerboard (period 2·cell px) inside `box`."""
    arr = np.full((size, size, 3), 128, dtype=np.uint8)
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    arr[y0:y1, x0:x1] = (((yy // cell + xx // cell) % 2) * 255)[..., None].astype(np.uint8)
    return Image.fromarray(arr)


def test_object_view_from_the_original_keeps_fine_detail():
    """512 px image, 128 px box, 64 px input: the pattern's period is 8 px in the original, 4 px in a
    crop of the original resized to 64, but 1 px in the loader's tensor, where the resize filters it out."""
    from xdomain_bench.data.transforms import EvalTransform

    size, box = 64, (192, 192, 320, 320)
    img = checker_image(box=box)
    pixels, norm_box = EvalTransform(ImagePreprocess(image_size=size))(img, box)
    old = object_view(pixels[None], norm_box[None])[0]
    new = original_object_views([img], torch.tensor([box], dtype=torch.float32), size, 1.0, "bicubic",
                                CLIP_MEAN, CLIP_STD)[0]
    ref = pil_reference(img, box, size)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-5)
    e_new, e_old = high_frequency_energy(new), high_frequency_energy(old)
    assert e_new > 50 * e_old
    assert abs(e_new - high_frequency_energy(ref)) <= 1e-6 * e_new


def test_object_window_is_squared_and_shifted_inside_the_original():
    img = checker_image(size=300, box=(0, 0, 300, 300), cell=3)
    img = img.crop((0, 0, 300, 200))  # 300 x 200
    box = torch.tensor([[250.0, 20.0, 290.0, 100.0]])  # 40 x 80 at the right edge: square 80, shifted left
    view = original_object_views([img], box, 32, 1.0, "bicubic", CLIP_MEAN, CLIP_STD)[0]
    torch.testing.assert_close(view, pil_reference(img, (220, 20, 300, 100), 32), rtol=0, atol=1e-5)


def test_box_mappings_between_tensor_and_image_by_hand():
    window = torch.tensor([[100.0, 50.0, 200.0, 100.0, 1.0], [0.0, 0.0, 400.0, 300.0, 0.0]])
    sizes = torch.tensor([[400.0, 300.0], [400.0, 300.0]])
    tensor_box = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.25, 0.5, 1.0, 1.0]])
    # row 0 is flipped: x in the unflipped crop is [0.5, 0.9] -> 100 + [100, 180]; y -> 50 + [20, 60]
    expected = torch.tensor([[200.0, 70.0, 280.0, 110.0], [100.0, 150.0, 400.0, 300.0]])
    torch.testing.assert_close(image_boxes_from_tensor(tensor_box, window, sizes), expected)
    torch.testing.assert_close(tensor_boxes_from_image(expected, window), tensor_box)
    outside = tensor_boxes_from_image(torch.tensor([[0.0, 0.0, 90.0, 40.0]] * 2), window)
    assert bool(torch.isnan(outside[0]).all()) and bool(torch.isfinite(outside[1]).all())


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cub_views")
    get_dataset("cub").synth(root, scale="tiny", seed=0)
    return root


def parsed_boxes(cub_root: Path) -> dict[int, list[float]]:
    """bounding_boxes.txt read independently: id -> [x, y, x + w, y + h]."""
    out = {}
    for line in (cub_root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines():
        i, x, y, w, h = line.split()
        out[int(i)] = [float(x), float(y), float(x) + float(w), float(y) + float(h)]
    return out


def train_batch(cub_root: Path, tmp_path: Path, tiny_vlm, augment: bool = True) -> dict:
    dm = RetrievalDataModule("cub", cub_root, preprocess=tiny_vlm.preprocess, batch_size=8, seed=0,
                             augment=augment, original_images=True, cache_dir=tmp_path / "manifests")
    return next(iter(dm.train_dataloader()))


def capture_builder(monkeypatch) -> dict:
    seen: dict = {}
    real = dva_module.original_object_views

    def spy(images, boxes, *args):
        seen.update(images=list(images), boxes=boxes.clone())
        return real(images, boxes, *args)

    monkeypatch.setattr(dva_module, "original_object_views", spy)
    return seen


def test_file_boxes_reach_the_view_builder_exactly(cub_root, tmp_path, tiny_vlm, monkeypatch):
    batch = train_batch(cub_root, tmp_path, tiny_vlm)
    boxes = parsed_boxes(cub_root)
    expected = torch.tensor([boxes[int(i)] for i in batch["image_id"]], dtype=torch.float32)
    assert torch.equal(batch["image_box"], expected)
    # the window maps the image box onto the loader's own (crop + flip) tensor box
    torch.testing.assert_close(tensor_boxes_from_image(expected, batch["window"]), batch["box"], equal_nan=True)
    seen = capture_builder(monkeypatch)
    m = make_dva(tiny_vlm, box_source="file", view_augment=NO_AUG)
    views, names = m.views(batch)
    assert torch.equal(seen["boxes"], expected)
    assert [im.size for im in seen["images"]] == [(64, 64)] * 8 and m.notes["boxes_annotation"] == 8
    size = tiny_vlm.preprocess.image_size
    obj = views[names.index("obj") * 8:(names.index("obj") + 1) * 8]
    for view, img, box in zip(obj, seen["images"], expected.tolist()):
        x0, y0, x1, y1 = box
        side = min(max(x1 - x0, y1 - y0), 64.0)  # the square window, shifted inside the 64 px image
        left = min(max((x0 + x1) / 2 - side / 2, 0.0), 64 - side)
        top = min(max((y0 + y1) / 2 - side / 2, 0.0), 64 - side)
        win = (round(left), round(top), round(left + side), round(top + side))
        torch.testing.assert_close(view, pil_reference(img, win, size), rtol=0, atol=1e-5)
    assert m.notes["object_view"] == "full-resolution crop"


def test_user_box_file_by_image_id(cub_root, tmp_path, tiny_vlm, monkeypatch):
    batch = train_batch(cub_root, tmp_path, tiny_vlm)
    ids = [int(i) for i in batch["image_id"]]
    path = tmp_path / "detector_boxes.txt"
    path.write_text(f"{ids[0]} 3.5 4 20.25 30\n{ids[1]} 0 0 64 64\n")
    seen = capture_builder(monkeypatch)
    m = make_dva(tiny_vlm, box_source="file", box_file=str(path), view_augment=NO_AUG)
    m.views(batch)
    assert seen["boxes"][:2].tolist() == [[3.5, 4.0, 23.75, 34.0], [0.0, 0.0, 64.0, 64.0]]
    assert m.notes["boxes_annotation"] == 2 and m.notes["boxes_attention"] == 6  # rows without a file box
    assert bool(torch.isfinite(seen["boxes"]).all())
    with pytest.raises(ConfigError, match="set box_source: file"):
        make_dva(tiny_vlm, box_file=str(path))
    path.write_text(f"{ids[0]} 3.5 4 20.25\n")
    with pytest.raises(DataError, match=r"detector_boxes.txt:1: expected '<image_id> <x> <y> <width> <height>'"):
        make_dva(tiny_vlm, box_source="file", box_file=str(path))


def test_file_source_without_boxes_is_a_config_error(tiny_vlm):
    with pytest.raises(ConfigError, match=r"box_source: file, but cub ships no boxes \(no bounding_boxes.txt\)"):
        make_dva(tiny_vlm, make_info(has_boxes=False), box_source="file")


def test_attention_boxes_are_mapped_back_to_image_pixels(cub_root, tmp_path, tiny_vlm, monkeypatch):
    batch = train_batch(cub_root, tmp_path, tiny_vlm)
    assert bool((batch["window"][:, 4] > 0).any()) and bool((batch["window"][:, 2] < 64).any())  # flips, crops
    m = make_dva(tiny_vlm, box_source="attention", view_augment=NO_AUG)
    fixed = torch.tensor([[0.125, 0.25, 0.5, 0.75]] * 8)
    monkeypatch.setattr(m.box_cache, "boxes", lambda vlm, pixels, idx, role: fixed[: pixels.shape[0]].clone())
    seen = capture_builder(monkeypatch)
    m.views(batch)
    for got, (left, top, w, h, flip) in zip(seen["boxes"].tolist(), batch["window"].tolist()):
        x0, x1 = (0.5, 0.875) if flip else (0.125, 0.5)  # a flipped tensor shows the image mirrored
        want = [left + x0 * w, top + 0.25 * h, left + x1 * w, top + 0.75 * h]
        assert got == pytest.approx(want, abs=1e-4)
    assert m.notes["boxes_attention"] == 8


def test_batches_without_images_fall_back_to_the_tensor_crop(tiny_vlm):
    m = make_dva(tiny_vlm, view_augment=NO_AUG)
    batch = make_batch(tiny_vlm)
    views, names = m.views(batch)
    boxes = m.object_boxes(batch)
    torch.testing.assert_close(views[6:12], object_view(batch["pixels"], boxes))
    assert m.notes["object_view"] == "tensor crop (batch without images)"


def test_only_training_batches_carry_images(cub_root, tmp_path, tiny_vlm):
    dm = RetrievalDataModule("cub", cub_root, preprocess=tiny_vlm.preprocess, batch_size=4, seed=0,
                             original_images=True, cache_dir=tmp_path / "manifests")
    assert "image" not in next(iter(dm.eval_dataloader("query")))
    plain = RetrievalDataModule("cub", cub_root, preprocess=tiny_vlm.preprocess, batch_size=4, seed=0,
                                cache_dir=tmp_path / "manifests")
    a, b = next(iter(plain.train_dataloader())), next(iter(dm.train_dataloader()))
    assert "image" not in a and torch.equal(a["pixels"], b["pixels"])  # same augmentation either way
