"""RetrievalDataModule on DomainNet fixture trees: batches, mappings, caching, bad images."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch
from dn_fixture import TreeModel as T
from dn_fixture import png_bytes
from PIL import Image, ImageDraw

from xdomain_bench.data.datamodule import ManifestDataset, RetrievalDataModule, WorkerDataError, collate
from xdomain_bench.data.domainnet import DomainNet
from xdomain_bench.data.info import DataInfo
from xdomain_bench.data.manifest import write_manifest
from xdomain_bench.data.transforms import EvalTransform
from xdomain_bench.errors import ConfigError, DataError
from xdomain_bench.vlm.preprocess import ImagePreprocess

PP = ImagePreprocess(image_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
TRAIN_DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real"]  # holdout sketch


def make_dm(root, tmp_path, protocol="ucdr", variant="clean", holdout="sketch", **kw) -> RetrievalDataModule:
    kw.setdefault("batch_size", 10)
    kw.setdefault("eval_batch_size", 7)
    return RetrievalDataModule("domainnet", root, protocol, variant, holdout, preprocess=PP,
                               cache_dir=tmp_path / "cache", **kw)


def test_info(dn_root, tmp_path):
    dm = make_dm(dn_root, tmp_path, gallery="mixed")
    dm.setup()
    info = dm.info
    assert info.class_names == T.ALL and info.train_class_ids == list(range(245))
    assert info.train_domains == TRAIN_DOMAINS and not info.single_domain
    assert info.num_train_classes == 245 and info.train_class_names == T.TRAIN
    assert info.inverted_domains == ("quickdraw", "sketch")
    assert (info.task, info.same_set, info.has_captions, info.has_boxes) == ("class", False, False, False)
    assert info.primary_metric == "mAP@200" and info.selection_metric == "mAP@200"
    assert info.metrics == ("mAP@200", "Prec@200", "mAP@all", "Prec@100")
    assert info.notes["setting"] == "holdout-sketch_seen-quickdraw" and "mixed_gallery" in info.notes


def test_train_batches_are_domain_balanced_and_mapped(dn_root, tmp_path):
    dm = make_dm(dn_root, tmp_path)
    frame = dm.role_frame("train")
    batches = [b for _, b in zip(range(3), dm.train_dataloader())]
    assert len(dm.train_dataloader()) == len(frame) // 10
    for b in batches:
        assert set(b) == {"pixels", "class_id", "label", "domain_id", "index", "box"}
        assert b["pixels"].shape == (10, 3, 16, 16) and b["pixels"].dtype == torch.float32
        assert all(b[k].dtype == torch.long for k in ("class_id", "label", "domain_id", "index"))
        assert b["box"].shape == (10, 4) and torch.isnan(b["box"]).all()
        assert sorted(b["domain_id"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        rows = frame.iloc[b["index"].tolist()]
        assert [TRAIN_DOMAINS[d] for d in b["domain_id"].tolist()] == list(rows["domain"])
        assert b["class_id"].tolist() == list(rows["class_id"])
        inverted = rows["domain"].isin(["quickdraw"]).tolist()  # white images: inverted ones are black
        assert [bool(p.max() < 0.01) for p in b["pixels"]] == inverted
    again = next(iter(make_dm(dn_root, tmp_path).train_dataloader()))["index"]
    other = next(iter(make_dm(dn_root, tmp_path, seed=1).train_dataloader()))["index"]
    assert torch.equal(again, batches[0]["index"]) and not torch.equal(other, again)


def test_labels_index_the_training_classes(dn_root, tmp_path):
    dm = make_dm(dn_root, tmp_path, max_train_samples=40, domain_balanced=False, batch_size=64, gallery="mixed")
    dm.setup()
    ids = dm.info.train_class_ids
    assert len(dm.role_frame("train")) == 40 and 1 < len(ids) < 245 and ids == sorted(ids)
    batch = next(iter(dm.train_dataloader()))  # 40 rows < batch 64: no drop_last, one batch
    assert len(batch["label"]) == 40
    assert batch["label"].tolist() == [ids.index(c) for c in batch["class_id"].tolist()]
    gal = torch.cat([b["label"] for b in dm.eval_dataloader("gallery")])
    cls = dm.role_frame("gallery")["class_id"].tolist()
    assert gal.tolist() == [ids.index(c) if c in ids else -1 for c in cls]


def test_eval_loaders_follow_manifest_order(dn_root, tmp_path):
    dm = make_dm(dn_root, tmp_path)
    for role, white in (("query", False), ("gallery", True), ("val_query", None)):
        frame = dm.role_frame(role)
        batches = list(dm.eval_dataloader(role))
        assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(frame)))
        assert torch.cat([b["class_id"] for b in batches]).tolist() == list(frame["class_id"])
        if white is not None:  # sketch queries are inverted (black), real gallery images stay white
            means = torch.cat([b["pixels"].mean(dim=(1, 2, 3)) for b in batches])
            assert torch.allclose(means, torch.full_like(means, 1.0 if white else 0.0), atol=1e-3)
    q = torch.cat([b["domain_id"] for b in dm.eval_dataloader("query")])
    assert (q == -1).all()  # sketch is not a training domain
    val = dm.val_dataloader()
    assert len(val) == 2 and [len(v.dataset) for v in val] == [len(dm.role_frame("val_query")),
                                                                len(dm.role_frame("val_gallery"))]
    with pytest.raises(ConfigError, match="unknown evaluation role 'train'"):
        dm.eval_dataloader("train")
    with pytest.raises(ConfigError, match="has no captions"):
        dm.texts("query")


def test_paper_profile_without_val_split(dn_root, tmp_path):
    dm = make_dm(dn_root, tmp_path, variant="paper", paper_profile="pros")
    dm.setup()
    assert dm.val_dataloader() == [] and dm.info.num_train_classes == 300


def test_manifest_cache_and_listing_verification(sparse_root, tmp_path, monkeypatch):
    dm = make_dm(sparse_root, tmp_path)
    dm.setup()
    cached = tmp_path / "cache"
    assert [p.name for p in cached.glob("*.csv")] == [dm.info.notes["manifest_path"].rsplit("/", 1)[1]]

    def no_build(*args, **kwargs):
        raise AssertionError("a cached manifest must be read, not rebuilt")

    monkeypatch.setattr(DomainNet, "build_manifest", no_build)
    again = make_dm(sparse_root, tmp_path)
    again.setup()
    assert again.role_frame("train").equals(dm.role_frame("train"))
    gone = sparse_root / "DomainNet" / "real" / T.TEST[0] / f"real_{300:03d}_000000.png"
    gone.unlink()
    with pytest.raises(DataError, match="differs from the one manifest .* was made from"):
        make_dm(sparse_root, tmp_path).setup()
    lenient = make_dm(sparse_root, tmp_path, allow_listing_mismatch=True)
    lenient.setup()
    assert lenient.info.notes["nonstandard"] and lenient.info.notes["listing_mismatch"]["dropped_rows"] == 1
    assert len(lenient.role_frame("gallery")) == len(dm.role_frame("gallery")) - 1


def test_supplied_manifest_is_verified(sparse_root, tmp_path):
    path = write_manifest(DomainNet().build_manifest(sparse_root, "ucdr"), tmp_path / "m" / "ucdr.csv")
    dm = make_dm(sparse_root, tmp_path, manifest_path=path)
    dm.setup()
    assert dm.info.notes["manifest_path"] == str(path) and not list((tmp_path / "cache").glob("*.csv"))
    with pytest.raises(ConfigError, match="was made for protocol='ucdr', not 'udcdr'"):
        make_dm(sparse_root, tmp_path, protocol="udcdr", manifest_path=path).setup()
    (tmp_path / "m" / "ucdr.meta.json").unlink()
    with pytest.raises(DataError, match="has no sidecar"):
        make_dm(sparse_root, tmp_path, manifest_path=path).setup()


def test_bad_images_raise_or_are_skipped(sparse_root, tmp_path):
    folder = sparse_root / "DomainNet" / "real" / T.TEST[1]
    zero, trunc = folder / "real_301_000000.png", folder / "real_301_000002.png"
    zero.write_bytes(b"")
    trunc.write_bytes(png_bytes(size=(64, 64))[:60])
    strict = make_dm(sparse_root, tmp_path)
    with pytest.raises(DataError, match=f"zero-byte image: {zero}"):
        list(strict.eval_dataloader("gallery"))
    lenient = make_dm(sparse_root, tmp_path, skip_bad_images=True)
    lenient.setup()
    assert lenient.skipped_images == 2
    assert len(lenient.role_frame("gallery")) == len(strict.role_frame("gallery")) - 2
    assert sum(len(b["index"]) for b in lenient.eval_dataloader("gallery")) == len(lenient.role_frame("gallery"))


def test_worker_errors_keep_one_clean_line():
    from torch._utils import ExceptionWrapper

    try:
        raise WorkerDataError("zero-byte image: /x/y.png; re-download it")
    except WorkerDataError:
        wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    with pytest.raises(DataError) as info:
        wrapped.reraise()
    assert str(info.value) == "zero-byte image: /x/y.png; re-download it"


def test_captions_negatives_and_boxes_reach_the_batch(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(size=(40, 20)))
    rows = pd.DataFrame({"relpath": ["a.png", "a.png"], "class_name": ["x", "y"], "class_id": [0, 1],
                         "domain": ["photo", "photo"], "role": ["query", "query"],
                         "captions": [["first", "second"], None], "hard_negatives": [["n1", "n2"], []],
                         "box": [[10.0, 0.0, 20.0, 20.0], None]})
    info = DataInfo("toy", "itr", "clean", None, ["x", "y"], [1], ["photo"], "itr", False, True, True,
                    "R@1", ("R@1",), "R@1", ())
    ds = ManifestDataset(rows, tmp_path, EvalTransform(PP), info)
    batch = collate([ds[0], ds[1]])
    assert batch["caption"] == ["first", ""] and batch["negatives"] == [["n1", "n2"], []]
    assert batch["label"].tolist() == [-1, 0] and batch["domain_id"].tolist() == [0, 0]
    # 40x20 -> 32x16 (x0.8), centre crop 16 from x=8: box x 10..20 -> 8..16 -> 0..8 of 16; y 0..20 -> 0..16
    assert torch.allclose(batch["box"][0], torch.tensor([0.0, 0.0, 0.5, 1.0]))
    assert torch.isnan(batch["box"][1]).all()


def test_crop_to_box(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    ImageDraw.Draw(img).rectangle([10, 0, 19, 19], fill=(255, 0, 0))
    img.save(tmp_path / "a.png")
    rows = pd.DataFrame({"relpath": ["a.png"], "class_name": ["x"], "class_id": [0], "domain": ["photo"],
                         "role": ["query"], "box": [[10.0, 0.0, 20.0, 20.0]]})
    info = DataInfo("toy", "p", "clean", None, ["x"], [0], ["photo"], "class", True, False, True,
                    "R@1", ("R@1",), "R@1", ())
    item = ManifestDataset(rows, tmp_path, EvalTransform(PP), info, crop_to_box=True)[0]
    assert torch.allclose(item["box"], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert item["pixels"][1].max() < 0.05 and item["pixels"][0].min() > 0.95  # only the red object is left
