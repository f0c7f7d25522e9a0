"""Layout-independent manifests through the DataModule (PROTOCOLS §3.1, §4.1, §6): the same images
stored in another accepted layout, or annotations typed by another path, give the same manifest bytes
and the same pixels; a tree missing a class or domain is refused unless allowed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from dn_fixture import TreeModel as T
from dn_fixture import sparse_count

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.datamodule import RetrievalDataModule
from xdomain_bench.data.fdrd import write_canonical_jsonl
from xdomain_bench.data.manifest import read_manifest, write_manifest
from xdomain_bench.errors import ConfigError, DataError
from xdomain_bench.vlm.preprocess import ImagePreprocess

PP = ImagePreprocess(image_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
TX = "tx_000000000000"


def make_dm(name, root, tmp_path, protocol, cache="cache", **kw) -> RetrievalDataModule:
    return RetrievalDataModule(name, root, protocol, "clean", None, preprocess=PP, batch_size=4,
                               eval_batch_size=5, cache_dir=tmp_path / cache, **kw)


def manifest_bytes(dm: RetrievalDataModule) -> tuple[bytes, bytes]:
    path = Path(dm.info.notes["manifest_path"])
    return path.read_bytes(), path.with_name(path.stem + ".meta.json").read_bytes()


def query_pixels(dm: RetrievalDataModule) -> torch.Tensor:
    return torch.cat([b["pixels"] for b in dm.eval_dataloader("query")])


@pytest.fixture(scope="module")
def synth_trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    for name in ("sketchy", "tuberlin"):
        get_dataset(name).synth(root / name, scale="tiny", seed=0)
    return root


def test_archived_sketchy_tree_loads_the_same_manifest_and_pixels(synth_trees, tmp_path):
    flat = synth_trees / "sketchy"
    archived = tmp_path / "archived"
    shutil.copytree(flat, archived)
    sketch = archived / "Sketchy" / "sketch"
    (sketch / TX).mkdir()
    for folder in [p for p in sketch.iterdir() if p.name != TX]:
        folder.rename(sketch / TX / folder.name)
    a = make_dm("sketchy", flat, tmp_path, "uccdr_eccv21", cache="a")
    b = make_dm("sketchy", archived, tmp_path, "uccdr_eccv21", cache="b")
    a.setup()
    b.setup()
    assert manifest_bytes(a) == manifest_bytes(b)
    assert b.info.notes["listing_sha256"] == a.info.notes["listing_sha256"]
    ds = b.dataset_for("query")
    assert all(p.is_file() and p.parent.parent.name == TX for p in ds.paths)
    assert torch.equal(query_pixels(a), query_pixels(b))


def _raw_tuberlin(prepared: Path, raw: Path) -> None:
    """The upstream download's names: spaces in sketch folders, squashed photo folders, `.JPEG` files."""
    shutil.copytree(prepared, raw)
    ds = raw / "TUBerlin"
    for folder in list((ds / "sketches").iterdir()):
        folder.rename(folder.with_name(folder.name.replace("_", " ")))
    for folder in list((ds / "images").iterdir()):
        for f in folder.glob("*.jpg"):
            f.rename(f.with_suffix(".JPEG"))
        folder.rename(folder.with_name(re.sub(r"[_()]", "", folder.name)))


def test_raw_tuberlin_tree_loads_the_same_manifest_and_pixels(synth_trees, tmp_path):
    prepared = synth_trees / "tuberlin"
    _raw_tuberlin(prepared, tmp_path / "raw")
    assert (tmp_path / "raw" / "TUBerlin" / "images" / "alarmclock").is_dir()
    a = make_dm("tuberlin", prepared, tmp_path, "uccdr_random30", cache="a")
    b = make_dm("tuberlin", tmp_path / "raw", tmp_path, "uccdr_random30", cache="b")
    a.setup()
    b.setup()
    assert manifest_bytes(a) == manifest_bytes(b)
    gallery = b.dataset_for("gallery")
    assert all(p.suffix == ".JPEG" and p.is_file() for p in gallery.paths)
    assert all(r.endswith(".jpg") for r in gallery.relpaths)
    assert torch.equal(torch.cat([x["pixels"] for x in a.eval_dataloader("gallery")]),
                       torch.cat([x["pixels"] for x in b.eval_dataloader("gallery")]))


# --- FDRD: annotations identified by content ----------------------------------------------------
@pytest.fixture
def fdrd_root(tmp_path):
    root = tmp_path / "data"
    get_dataset("fdrd").synth(root, scale="tiny", seed=0)
    return root


def test_fdrd_sidecar_names_annotations_by_content_not_path(fdrd_root, tmp_path, monkeypatch):
    adapter = get_dataset("fdrd")
    canon = tmp_path / "here" / "canon"
    write_canonical_jsonl(adapter.build_manifest(fdrd_root, "itr", "clean"), canon)
    elsewhere = tmp_path / "elsewhere" / "copy"
    shutil.copytree(canon, elsewhere)
    a = write_manifest(adapter.build_manifest(fdrd_root, "itr", "clean", annotations=str(canon)), tmp_path / "a.csv")
    monkeypatch.chdir(tmp_path / "elsewhere")  # typed relative to another working directory
    b = write_manifest(adapter.build_manifest(fdrd_root, "itr", "clean", annotations="copy"), tmp_path / "b.csv")
    assert a.read_bytes() == b.read_bytes()
    side = (tmp_path / "a.meta.json").read_text()
    assert side == (tmp_path / "b.meta.json").read_text()
    assert str(tmp_path) not in side and re.search(r'"annotations": "sha256:[0-9a-f]{64}"', side)
    # a collaborator's manifest verifies here, with the annotations at yet another path
    dm = make_dm("fdrd", fdrd_root, tmp_path, "itr", manifest_path=a, annotations=str(elsewhere))
    dm.setup()
    assert dm.info.notes["manifest_path"] == str(a)
    # other annotation content is another manifest
    first = sorted(elsewhere.iterdir())[0]
    first.write_text(first.read_text().replace("a ", "one ", 1))
    with pytest.raises(ConfigError, match="was made for options.annotations="):
        make_dm("fdrd", fdrd_root, tmp_path, "itr", manifest_path=a, annotations=str(elsewhere)).setup()


# --- completeness at run time -------------------------------------------------------------------
def test_missing_class_folder_is_refused_then_allowed_as_nonstandard(sparse_root, tmp_path):
    full = RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                               cache_dir=tmp_path / "full")
    full.setup()
    victim = T.TEST[0]
    shutil.rmtree(sparse_root / "DomainNet" / "sketch" / victim)
    with pytest.raises(DataError) as exc:
        RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                            cache_dir=tmp_path / "c1").setup()
    msg = str(exc.value)
    assert "\n" not in msg and f"sketch/{victim}" in msg and "allow_missing_classes=true" in msg
    dm = RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                             cache_dir=tmp_path / "c2", allow_missing_classes=True)
    dm.setup()
    assert dm.info.notes["nonstandard"] is True and dm.info.notes["missing_parts"] == [f"sketch/{victim}"]
    lost = sparse_count("sketch", victim)
    assert lost > 0 and len(dm.role_frame("query")) == len(full.role_frame("query")) - lost
    assert victim not in set(dm.role_frame("query")["class_name"])


def test_cached_manifest_does_not_hide_a_missing_domain(sparse_root, tmp_path):
    RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                        cache_dir=tmp_path / "c").setup()
    shutil.rmtree(sparse_root / "DomainNet" / "infograph")
    with pytest.raises(DataError, match=f"missing domain folder {sparse_root / 'DomainNet' / 'infograph'}"):
        RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                            cache_dir=tmp_path / "c").setup()
    dm = RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                             cache_dir=tmp_path / "c", allow_missing_classes=True)
    dm.setup()
    assert dm.info.notes["missing_parts"] == ["infograph/"] and "infograph" not in dm.info.train_domains


def test_known_gap_is_not_missing(sparse_root, tmp_path):
    shutil.rmtree(sparse_root / "DomainNet" / "painting" / "t-shirt")  # PROTOCOLS §2.2
    dm = RetrievalDataModule("domainnet", sparse_root, "ucdr", "clean", "sketch", preprocess=PP,
                             cache_dir=tmp_path / "c")
    dm.setup()
    assert "nonstandard" not in dm.info.notes


def test_missing_sketchy_class_in_a_synthetic_tree(synth_trees, tmp_path):
    tree = tmp_path / "sk"
    shutil.copytree(synth_trees / "sketchy", tree)
    cls = sorted(p.name for p in (tree / "Sketchy" / "extended_photo").iterdir())[0]
    shutil.rmtree(tree / "Sketchy" / "extended_photo" / cls)
    with pytest.raises(DataError, match=f"extended_photo/{cls}"):
        make_dm("sketchy", tree, tmp_path, "uccdr_eccv21").setup()
    dm = make_dm("sketchy", tree, tmp_path, "uccdr_eccv21", allow_missing_classes=True)
    dm.setup()
    assert dm.info.notes["missing_parts"] == [f"extended_photo/{cls}"]
    read_manifest(dm.info.notes["manifest_path"])  # the cached manifest carries the note too
    assert read_manifest(dm.info.notes["manifest_path"]).meta["notes"]["nonstandard"] is True
