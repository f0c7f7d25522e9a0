"""`hf-clip:<hub id>` resolved through a fake offline Hugging Face cache (the hub's on-disk layout:
models--<org>--<name>/{refs/main, snapshots/<commit>/, blobs/<sha>}); nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from xdomain_bench.errors import BackboneError
from xdomain_bench.vlm import load_backbone
from xdomain_bench.vlm.preprocess import ImagePreprocess

REPO = "fake-org/tiny-clip"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SNAPSHOT_PRE = {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 36}, "resample": 2,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "do_center_crop": True}
CWD_PRE = {"crop_size": 224, "size": 256, "resample": 3, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.9, 0.9]}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "xbench_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "preprocessor_config.json").write_text(json.dumps(CWD_PRE))  # must never be read
    monkeypatch.chdir(cwd)


def _fake_hub_cache(hub: Path, tiny_vlm, tmp_path: Path) -> Path:
    """Save a CLIPModel into the hub cache layout; the weights live in blobs/, linked from the snapshot."""
    staging = tmp_path / "staging"
    tiny_vlm.clip.save_pretrained(staging)
    tiny_vlm.tokenizer.save_pretrained(staging)
    (staging / "preprocessor_config.json").write_text(json.dumps(SNAPSHOT_PRE))
    repo = hub / ("models--" + REPO.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for f in staging.iterdir():
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    return snap


def test_hub_id_takes_preprocessing_and_weights_hash_from_the_snapshot(tiny_vlm, tmp_path):
    snap = _fake_hub_cache(tmp_path / "hub", tiny_vlm, tmp_path)
    vlm = load_backbone(f"hf-clip:{REPO}")
    assert vlm.preprocess == ImagePreprocess(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                             interpolation="bilinear", resize_short_side=36)
    weights = (snap / "model.safetensors").resolve()
    assert weights.parent.name == "blobs"
    assert vlm.spec["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert vlm.spec["revision"] == COMMIT and Path(vlm.spec["snapshot"]) == snap
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vlm.encode_image(x), tiny_vlm.encode_image(x))


def test_local_directory_ignores_the_working_directory_config(tiny_vlm, tmp_path):
    ckpt = tmp_path / "ckpt"
    tiny_vlm.clip.save_pretrained(ckpt)
    tiny_vlm.tokenizer.save_pretrained(ckpt)
    vlm = load_backbone(f"hf-clip:{ckpt}")
    assert vlm.preprocess == ImagePreprocess(image_size=32)  # CLIP defaults at the model's size, not CWD_PRE
    assert vlm.spec["weights_sha256"] == hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()


def test_snapshot_without_tokenizer_names_what_is_missing(tiny_vlm, tmp_path):
    snap = _fake_hub_cache(tmp_path / "hub", tiny_vlm, tmp_path)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        if (snap / name).exists():
            (snap / name).unlink()
    with pytest.raises(BackboneError) as err:
        load_backbone(f"hf-clip:{REPO}")
    msg = str(err.value)
    assert "snapshot" in msg and "tokenizer.json or vocab.json+merges.txt" in msg and "\n" not in msg


def test_offline_hint_names_the_hf_download_command(tmp_path):
    with pytest.raises(BackboneError) as err:
        load_backbone("hf-clip:openai/clip-vit-base-patch16")
    msg = str(err.value)
    assert "`hf download openai/clip-vit-base-patch16`" in msg and "huggingface-cli" not in msg
    assert str(tmp_path / "hub") in msg and "--allow-download" in msg


def test_download_in_offline_mode_says_so_instead_of_add_allow_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneError) as err:
        load_backbone("hf-clip:openai/clip-vit-base-patch16", allow_download=True)
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "add --allow-download" not in msg


def test_malformed_snapshot_preprocessor_config_is_one_line(tiny_vlm, tmp_path):
    snap = _fake_hub_cache(tmp_path / "hub", tiny_vlm, tmp_path)
    (snap / "preprocessor_config.json").unlink()
    (snap / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(BackboneError, match="preprocessor_config.json: not valid JSON"):
        load_backbone(f"hf-clip:{REPO}")
