"""H14 feature cache: exact eval features, reuse and invalidation, same batches as the DataModule, the
augmented-view policy, and DALSCLIP trained from the cache following the frozen-encoder loss trajectory."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xdomain_bench.data.datamodule import RetrievalDataModule
from xdomain_bench.data.info import DataInfo
from xdomain_bench.data.manifest import ROLES, Manifest
from xdomain_bench.data.transforms import EvalTransform, TrainTransform
from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.config import resolve_config
from xdomain_bench.methods.dalsclip import DALSCLIP
from xdomain_bench.methods.feature_cache import (
    FeatureCache,
    build_cached_loaders,
    parse_augmentation,
)

CLASSES = ["ant", "apple", "barn"]
DOMAINS = ["clipart", "painting", "real"]


class TinyDataModule(RetrievalDataModule):
    """The real DataModule over a hand-made manifest (no dataset adapter involved)."""

    def __init__(self, root, rows: pd.DataFrame, info: DataInfo, **kw) -> None:
        super().__init__("tiny", root, **kw)
        self._rows, self._info = rows, info

    def setup(self, stage=None) -> None:
        if self.info is not None:
            return
        self.manifest = Manifest(self._rows.reset_index(drop=True), {"listing_sha256": "tiny-listing"})
        self.info = self._info
        self.image_root = self.root
        self._path_of = {r: self.root / r for r in self._rows["relpath"]}
        self._roles = {r: self.manifest.role(r) for r in ROLES}
        self._train_tf, self._eval_tf = TrainTransform(self.preprocess), EvalTransform(self.preprocess)


def write_tree(root, domains=DOMAINS, per_cell=2, captions=False, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for d in domains:
        for cid, c in enumerate(CLASSES):
            for j in range(per_cell + 1):
                rel = f"{d}/{c}/{j}.png"
                (root / d / c).mkdir(parents=True, exist_ok=True)
                w, h = int(rng.integers(36, 60)), int(rng.integers(36, 60))
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / rel)
                role = "train" if j < per_cell else ("query" if d != "real" else "gallery")
                rec = {"relpath": rel, "class_name": c, "class_id": cid, "domain": d, "role": role, "box": None}
                if captions:
                    rec["captions"] = [f"a picture of {'a red' if j % 2 else 'a small'} {c}"]
                records.append(rec)
    return pd.DataFrame(records)


def make_dm(root, vlm, domains=DOMAINS, augment=False, captions=False, batch_size=6, seed=0):
    rows = write_tree(root, domains, captions=captions)
    train_domains = sorted({d for d in rows.loc[rows["role"] == "train", "domain"]})
    info = DataInfo("tiny", "p", "clean", None, list(CLASSES), list(range(len(CLASSES))), train_domains,
                    "itr" if captions else "class", False, captions, False, "m", ("m",), "m", ())
    dm = TinyDataModule(root, rows, info, preprocess=vlm.preprocess, batch_size=batch_size, eval_batch_size=4,
                        seed=seed, augment=augment)
    dm.setup()
    return dm


def make_method(vlm, info, **overrides) -> DALSCLIP:
    return DALSCLIP(vlm, info, resolve_config("dalsclip", overrides=overrides))


def test_eval_features_are_exact_and_reused(tmp_path, tiny_vlm):
    dm = make_dm(tmp_path / "data", tiny_vlm)
    cache = FeatureCache(tiny_vlm, tmp_path / "cache", batch_size=5)
    feats, boxes = cache.role_features(dm, "train")
    ds = dm.dataset_for("train")
    pixels = torch.stack([ds[i]["pixels"] for i in range(len(ds))])
    ref = tiny_vlm.frozen_image_features(pixels)
    assert feats.shape == ref.shape and feats.dtype == torch.float32
    torch.testing.assert_close(feats, ref, rtol=0, atol=1e-5)
    assert torch.isnan(boxes).all()
    assert cache.stats == {"computed": len(ds), "reused": 0}

    fresh = FeatureCache(tiny_vlm, tmp_path / "cache")  # a new process reads the store back
    again, _ = fresh.role_features(dm, "train")
    assert fresh.stats == {"computed": 0, "reused": len(ds)}
    assert torch.equal(again, feats)
    query, _ = fresh.role_features(dm, "query")  # another role adds its own images to the same store
    assert fresh.stats["computed"] == len(dm.dataset_for("query"))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    pre = FeatureCache(tiny_vlm, tmp_path / "cache", kind="pre_proj")
    pre_feats, _ = pre.role_features(dm, "train")
    assert pre_feats.shape[1] == tiny_vlm.sizes.vision_width
    torch.testing.assert_close(pre_feats, tiny_vlm.frozen_image_features(pixels, pre_proj=True), rtol=0, atol=1e-5)


def test_selected_rows_only(tmp_path, tiny_vlm):
    """A capped run reads a few rows: only those are computed; the rest are NaN, never silently zero."""
    dm = make_dm(tmp_path / "data", tiny_vlm)
    full, _ = FeatureCache(tiny_vlm, tmp_path / "ref").role_features(dm, "train")
    cache = FeatureCache(tiny_vlm, tmp_path / "cache")
    part, boxes = cache.role_features(dm, "train", rows=[4, 1, 4])
    assert cache.stats == {"computed": 2, "reused": 0}
    torch.testing.assert_close(part[[1, 4]], full[[1, 4]], rtol=0, atol=1e-5)
    others = [i for i in range(len(full)) if i not in (1, 4)]
    assert torch.isnan(part[others]).all() and torch.isnan(boxes).all()
    again = FeatureCache(tiny_vlm, tmp_path / "cache")
    again.role_features(dm, "train")  # the full role later adds only the missing rows
    assert again.stats == {"computed": len(full) - 2, "reused": 2}


def test_rewritten_image_and_other_backbone_invalidate(tmp_path, tiny_vlm):
    from xdomain_bench.vlm import load_backbone

    dm = make_dm(tmp_path / "data", tiny_vlm)
    cache = FeatureCache(tiny_vlm, tmp_path / "cache")
    feats, _ = cache.role_features(dm, "train")
    ds = dm.dataset_for("train")
    target = dm.image_root / ds.relpaths[3]
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(target)
    os.utime(target, ns=(1, 1))  # a different size and mtime even on coarse-grained filesystems
    cache2 = FeatureCache(tiny_vlm, tmp_path / "cache")
    feats2, _ = cache2.role_features(dm, "train")
    assert cache2.stats == {"computed": 1, "reused": len(ds) - 1}
    assert not torch.allclose(feats2[3], feats[3])
    torch.testing.assert_close(feats2[3:4], tiny_vlm.frozen_image_features(ds[3]["pixels"][None]), rtol=0, atol=1e-5)
    assert torch.equal(feats2[:3], feats[:3])

    (store,) = (tmp_path / "cache").glob("*.pt")
    other = load_backbone("tiny-clip:seed=1")
    cache3 = FeatureCache(other, tmp_path / "cache")
    cache3.role_features(dm, "train")
    assert cache3.stats["computed"] == len(ds)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2

    store.write_bytes(b"not a torch file")  # a corrupt store is recomputed, never trusted
    cache4 = FeatureCache(tiny_vlm, tmp_path / "cache")
    feats4, _ = cache4.role_features(dm, "train")
    assert cache4.stats["computed"] == len(ds)
    torch.testing.assert_close(feats4, feats2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("domains", [DOMAINS, ["real"]])
def test_cached_train_loader_yields_the_datamodule_batches(tmp_path, tiny_vlm, domains):
    dm = make_dm(tmp_path / "data", tiny_vlm, domains=domains, augment=True, batch_size=4)
    m = make_method(tiny_vlm, dm.info)
    train, eval_loader = build_cached_loaders(m, dm, tmp_path / "cache")
    ref = [(b["index"], b["label"], b["domain_id"]) for b in dm.train_dataloader()]
    got = [(b["index"], b["label"], b["domain_id"]) for b in train]
    assert len(got) == len(ref) > 0
    for (ri, rl, rd), (gi, gl, gd) in zip(ref, got):
        assert torch.equal(ri, gi) and torch.equal(rl, gl) and torch.equal(rd, gd)
    role = "gallery" if domains == ["real"] else "query"
    batch = next(iter(eval_loader(role)))
    assert "pixels" not in batch and batch["features"].shape == (len(batch["index"]), tiny_vlm.sizes.embed_dim)
    assert batch["index"].tolist() == list(range(len(batch["index"])))
    assert m.notes["feature_cache"]["augmentation"] == "none"


def test_augmented_views_policy(tmp_path, tiny_vlm):
    assert parse_augmentation("none") == 0 and parse_augmentation({"views": 3}) == 3
    assert parse_augmentation("views: 2") == 2
    for bad in ({"views": 0}, "sometimes", {"crops": 2}):
        with pytest.raises(ConfigError):
            parse_augmentation(bad)
    dm = make_dm(tmp_path / "data", tiny_vlm, augment=True)
    cache = FeatureCache(tiny_vlm, tmp_path / "cache")
    eval_feats, _ = cache.role_features(dm, "train")
    v0, _ = cache.role_features(dm, "train", view=0)
    v1, _ = cache.role_features(dm, "train", view=1)
    assert not torch.allclose(v0, eval_feats) and not torch.allclose(v0, v1)
    again, _ = FeatureCache(tiny_vlm, tmp_path / "other").role_features(dm, "train", view=0)
    torch.testing.assert_close(again, v0, rtol=0, atol=1e-6)  # seeded per (image, view): reproducible

    m = make_method(tiny_vlm, dm.info, cache_augmentation={"views": 2})
    train, _ = build_cached_loaders(m, dm, tmp_path / "cache")
    assert m.notes["feature_cache"]["augmentation"] == "views:2"
    used = []
    for _ in range(3):
        for b in train:
            for f, i in zip(b["features"], b["index"]):
                is0, is1 = torch.equal(f, v0[i]), torch.equal(f, v1[i])
                assert is0 or is1
                used.append(is1)
    assert 0 < sum(used) < len(used)  # both views are drawn


@pytest.mark.parametrize("captions", [False, True])
def test_training_from_cache_follows_the_encoder_trajectory(tmp_path, tiny_vlm, captions):
    domains = ["real"] if captions else DOMAINS
    dm = make_dm(tmp_path / "data", tiny_vlm, domains=domains, captions=captions, batch_size=3 if captions else 9)

    def run(loader_fn) -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        m = make_method(tiny_vlm, dm.info, optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.1})
        m.set_phase("main")
        opt = m.configure_optimizers()
        m.train()
        losses = []
        loader = loader_fn(m)
        torch.manual_seed(1)  # dropout draws are identical in both runs
        for _ in range(2):  # two epochs
            for batch in loader:
                assert ("features" in batch) != ("pixels" in batch)
                opt.zero_grad()
                loss, _ = m.training_loss(batch)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        return losses, m.trainable_state_dict()

    direct, state_direct = run(lambda m: dm.train_dataloader())
    cached, state_cached = run(lambda m: build_cached_loaders(m, dm, tmp_path / "cache")[0])
    assert len(direct) == len(cached) >= 4
    np.testing.assert_allclose(cached, direct, rtol=0, atol=1e-5)
    assert max(direct) - min(direct) > 1e-2  # the trajectory moves: the comparison is not trivial
    for k in state_direct:
        torch.testing.assert_close(state_cached[k], state_direct[k], rtol=0, atol=1e-5)
