"""Synthetic FDRD tree: released JSON format and CoOp layout, verify, and manifests whose counts match those
read from the written files (never from the synth marker). Format checks read the written files directly, not
through the adapter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from xdomain_bench.data.base import get_dataset

RELEASED_KEYS = {"file_name", "file_path", "positive", "negative"}


@pytest.fixture(scope="module")
def adapter():
    return get_dataset("fdrd")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, adapter) -> Path:
    root = tmp_path_factory.mktemp("fdrd_tiny")
    assert adapter.synth(root, scale="tiny", seed=0) == root / "FDRD"
    return root


def load(root: Path, rel: str) -> dict:
    return json.loads((root / "FDRD" / rel).read_text(encoding="utf-8"))


def test_synth_writes_the_released_format_and_coop_layout(tiny):
    pets, flowers, plane = load(tiny, "test/pets_test.json"), load(tiny, "test/flower_test.json"), \
        load(tiny, "test/plane_test.json")
    for key, rec in pets.items():  # pets: no class_name; key = file_name = <Breed>_<n>
        assert set(rec) == RELEASED_KEYS and rec["file_name"] == key and len(rec["negative"]) == 4
        assert (tiny / "oxford_pets/images" / f"{key}.jpg").is_file()
    assert {k.rsplit("_", 1)[0] for k in pets} >= {"Abyssinian", "american_pit_bull_terrier"}
    for key, rec in flowers.items():  # flowers: class_name + 5-digit number; file_path not in the tree
        assert set(rec) == RELEASED_KEYS | {"class_name", "number"}
        assert key == f"{rec['class_name']}_image_{rec['number']}" and len(rec["number"]) == 5
        assert (tiny / f"oxford_flowers/jpg/image_{rec['number']}.jpg").is_file()
        assert not Path(rec["file_path"]).is_file()
    variants = (tiny / "fgvc_aircraft/variants.txt").read_text().splitlines()
    assert "F-16A/B" in variants and "F/A-18" in variants and "BAE 146-200" in variants
    for key, rec in plane.items():  # aircraft: key = <variant with / -> _>_<7-digit id>
        assert key.endswith("_" + rec["file_name"]) and len(rec["file_name"]) == 7
        assert key.rsplit("_", 1)[0] in {v.replace("/", "_") for v in variants}
        assert (tiny / f"fgvc_aircraft/images/{rec['file_name']}.jpg").is_file()
    assert any(k.startswith("F-16A_B_") for k in plane) and any(k.startswith("F_A-18_") for k in plane)
    assert all(rec["negative"] == [] for rec in load(tiny, "train/plane_train.json").values())
    with Image.open(next((tiny / "oxford_pets/images").iterdir())) as im:
        assert im.size == (64, 64) and im.format == "JPEG"
    val_lines = (tiny / "fgvc_aircraft/images_variant_val.txt").read_text().splitlines()
    assert val_lines and all(line.split(" ", 1)[0].isdigit() and len(line.split(" ", 1)[0]) == 7
                             for line in val_lines)
    split = json.loads((tiny / "oxford_pets/split_zhou_OxfordPets.json").read_text())
    assert set(split) == {"train", "val", "test"} and all(len(item) == 3 for item in split["val"])


def test_synth_reproduces_the_quirks(tiny):
    pets = load(tiny, "test/pets_test.json")
    positives = [rec["positive"] for rec in pets.values()]
    assert len(positives) - len(set(positives)) == 1  # one duplicate-caption pair
    norm = [{" ".join(n.split()) for n in rec["negative"]} for rec in pets.values()]
    assert sum(" ".join(rec["positive"].split()) in n for rec, n in zip(pets.values(), norm)) == 1
    assert sum(len(set(rec["negative"])) < 4 for rec in pets.values()) >= 1


def counts_from_files(root: Path) -> dict[str, dict[str, int]]:
    """Per core dataset, counted from the released-format JSON and CoOp's split files by PROTOCOLS §6.2/§6.6
    alone: test entries, train entries whose image is in CoOp's val split, the other train entries, and the
    distinct test classes (pets and aircraft: key prefix before the last `_`, `/` restored in aircraft)."""
    out = {}
    for ds, tag, image_dir in (("oxford_pets", "pets", "images"), ("oxford_flowers", "flower", "jpg"),
                               ("fgvc_aircraft", "plane", "images")):
        test, train = load(root, f"test/{tag}_test.json"), load(root, f"train/{tag}_train.json")
        if ds == "fgvc_aircraft":
            lines = (root / ds / "images_variant_val.txt").read_text().splitlines()
            val = {f"{ds}/images/{line.split(' ', 1)[0]}.jpg" for line in lines if line.strip()}
            paths = {k: f"{ds}/images/{r['file_name']}.jpg" for k, r in train.items()}
            classes = {k.rsplit("_", 1)[0].replace("F-16A_B", "F-16A/B").replace("F_A-18", "F/A-18") for k in test}
        else:
            split = json.loads((root / ds / f"split_zhou_{'OxfordPets' if tag == 'pets' else 'OxfordFlowers'}.json")
                               .read_text())
            val = {f"{ds}/{image_dir}/{item[0]}" for item in split["val"]}
            if ds == "oxford_pets":
                paths = {k: f"{ds}/images/{k}.jpg" for k in train}
                classes = {k.rsplit("_", 1)[0] for k in test}
            else:
                paths = {k: f"{ds}/jpg/image_{r['number']}.jpg" for k, r in train.items()}
                classes = {r["class_name"] for r in test.values()}
        n_val = sum(p in val for p in paths.values())
        out[ds] = {"test": len(test), "val": n_val, "train": len(train) - n_val, "classes": len(classes)}
    return out


def test_verify_passes_and_manifests_match_counts_read_from_the_files(tiny, adapter):
    report = adapter.verify(tiny)
    assert report.ok, report.problems
    assert report.warnings == []
    files = counts_from_files(tiny)
    assert all(c["test"] and c["val"] and c["train"] for c in files.values()), files  # every role non-empty
    clean = adapter.build_manifest(tiny, "itr", "clean")
    paper = adapter.build_manifest(tiny, "itr", "paper")
    assert clean.meta["counts"]["query"] == paper.meta["counts"]["query"] == sum(c["test"] for c in files.values())
    assert clean.meta["counts"]["val_query"] == sum(c["val"] for c in files.values())
    assert clean.meta["counts"]["train"] == sum(c["train"] for c in files.values())
    assert paper.meta["counts"]["train"] == sum(c["train"] + c["val"] for c in files.values())
    assert paper.meta["counts"]["val_query"] == 0
    for ds, info in clean.meta["datasets"].items():
        assert info["num_classes"] == files[ds]["classes"] == 6, ds  # the tiny tree's six classes each
        query = clean.role("query")
        assert (query["relpath"].str.split("/").str[0] == ds).sum() == files[ds]["test"], ds
    assert "F-16A/B" in set(clean.rows.class_name) and "F/A-18" in set(clean.rows.class_name)


def test_synth_is_deterministic(tiny, adapter, tmp_path):
    adapter.synth(tmp_path, scale="tiny", seed=0)
    for rel in ("test/pets_test.json", "train/flower_train.json", "test/plane_test.json"):
        assert (tmp_path / "FDRD" / rel).read_bytes() == (tiny / "FDRD" / rel).read_bytes()
    a = adapter.build_manifest(tmp_path).rows
    b = adapter.build_manifest(tiny).rows
    assert a.to_csv() == b.to_csv()


def test_verify_flags_broken_files(tiny, adapter, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny, root)
    pets = load(root, "test/pets_test.json")
    key = sorted(pets)[0]
    image = root / "oxford_pets/images" / f"{key}.jpg"
    image.write_bytes(image.read_bytes()[:100])
    text = (root / "FDRD/test/flower_test.json").read_text().splitlines()
    text[2] = text[2] + ","  # line 3 ends in ",," (the first field of the first entry)
    (root / "FDRD/test/flower_test.json").write_text("\n".join(text))
    report = adapter.verify(root)
    assert not report.ok
    joined = "\n".join(report.problems)
    assert f"pets_test.json: key '{key}': unreadable or truncated image" in joined
    assert "flower_test.json:3:" in joined and "malformed JSON" in joined


CAPTION = re.compile(r"^a photo of a (?P<cls>.+?), a (?P<size>small|medium|large) (?P<obj>.+) at the "
                     r"(?P<place>(?:top|middle|bottom) (?:left|centre|right)) on a (?P<bg>[a-z-]+) background(?: \(view \d+\))?\.$")


@pytest.mark.parametrize("tag", ["pets", "flower"])
def test_train_negatives_swap_one_scene_attribute_of_the_same_class(tiny, tag):
    """Train captions' negatives are same-class hard negatives (DCAR weighs those 1 + alpha): the positive with
    exactly one of size, place or background changed; test negatives stay class swaps."""
    swapped = []
    for entry in load(tiny, f"train/{tag}_train.json").values():
        pos = CAPTION.match(entry["positive"]).groupdict()
        assert entry["negative"] and len(set(entry["negative"])) == len(entry["negative"])
        for neg in entry["negative"]:
            got = CAPTION.match(neg).groupdict()
            diff = [k for k in pos if pos[k] != got[k]]
            assert len(diff) == 1 and diff[0] in ("size", "place", "bg"), (entry["positive"], neg)
            swapped += diff
    assert set(swapped) == {"size", "place", "bg"}
    for entry in load(tiny, f"test/{tag}_test.json").values():
        pos = CAPTION.match(entry["positive"]).groupdict()
        texts = {" ".join(n.split()) for n in entry["negative"]} - {entry["positive"]}  # the quirks aside
        classes = {CAPTION.match(n).group("cls") for n in texts}
        assert pos["cls"] not in classes
