"""CUB-200-2011 adapter (PROTOCOLS.md §5): full-size official-format metadata and broken inputs."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from dn_fixture import files_per_class, listing_is_shuffled

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.manifest import ROLES, write_manifest
from xdomain_bench.errors import ConfigError, DataError
from xdomain_bench.paths import dataset_cards_dir

NAMES = yaml.safe_load((dataset_cards_dir() / "cub.yaml").read_text())["class_names"]
# Per-class image counts and train counts with the official totals (PROTOCOLS §5.1):
# classes 1-100: 5,864 images; 101-200: 5,924; official split 5,994 train / 5,794 test.
PER_CLASS = {c: (59 if c <= 64 else 58) if c <= 100 else (60 if c <= 124 else 59) for c in range(1, 201)}
TRAIN_PER_CLASS = {c: 29 if c in (3, 50, 99, 120, 150, 199) else 30 for c in range(1, 201)}


def write_full_cub(root: Path, reverse: bool = False) -> Path:
    """11,788 rows in the official formats; images are empty files (the manifest builder never decodes)."""
    ds = root / "CUB_200_2011"
    rng = random.Random(0)
    images, labels, split, boxes = [], [], [], []
    for cid in range(1, 201):
        n, n_train = PER_CLASS[cid], TRAIN_PER_CLASS[cid]
        train_ks = set(rng.sample(range(n), n_train))
        for k in range(n):
            i = len(images) + 1
            images.append(f"{i} {NAMES[cid - 1]}/{NAMES[cid - 1][4:]}_{k:04d}_{7000 + i}.jpg")
            labels.append(f"{i} {cid}")
            split.append(f"{i} {int(k in train_ks)}")
            boxes.append(f"{i} {k % 7}.0 {k % 5 + 1}.5 {100 + k}.0 {50 + cid}.0")
    for d in (reversed(NAMES) if reverse else NAMES):
        (ds / "images" / d).mkdir(parents=True)
    for line in (reversed(images) if reverse else images):
        (ds / "images" / line.split()[1]).touch()
    for name, lines in (("classes.txt", [f"{i} {c}" for i, c in enumerate(NAMES, 1)]), ("images.txt", images),
                        ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes)):
        (ds / name).write_text("\n".join(lines) + "\n")
    return ds


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    write_full_cub(root)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cubtiny")
    get_dataset("cub").synth(root, "tiny")
    return root


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "CUB_200_2011", dst / "CUB_200_2011")
    return dst / "CUB_200_2011"


def test_full_fixture_files_have_the_official_totals(full):
    """The written metadata, counted from the files, against PROTOCOLS §5.1's published totals."""
    ds = full / "CUB_200_2011"

    def column(name: str) -> list[str]:
        return [line.split()[1] for line in (ds / name).read_text().splitlines()]

    assert [line.split(" ", 1)[1] for line in (ds / "classes.txt").read_text().splitlines()] == NAMES
    assert NAMES[0] == "001.Black_footed_Albatross" and NAMES[-1] == "200.Common_Yellowthroat"
    labels = [int(c) for c in column("image_class_labels.txt")]
    assert len(column("images.txt")) == len(labels) == 11788
    assert sum(c <= 100 for c in labels) == 5864 and sum(c > 100 for c in labels) == 5924
    split = column("train_test_split.txt")
    assert (split.count("1"), split.count("0")) == (5994, 5794)
    assert sum(1 for f in (ds / "images").rglob("*.jpg")) == 11788


def test_open_paper_is_5864_train_and_5924_same_set_test(full):
    m = get_dataset("cub").build_manifest(full, "fgir_open", "paper")
    c = m.counts()
    assert (c["train"], c["query"], c["gallery"], c["val_query"]) == (5864, 5924, 5924, 0)
    q, g = m.role("query"), m.role("gallery")
    assert list(q["relpath"]) == list(g["relpath"])  # one row each, same order: self-exclusion by index
    assert set(q["class_id"]) == set(range(100, 200)) and set(m.role("train")["class_id"]) == set(range(100))
    assert m.meta["same_set"] is True and m.meta["notes"]["no_val_split"]
    row = m.rows[m.rows["image_id"] == 1].iloc[0]
    assert row["class_name"] == NAMES[0] and row["class_id"] == 0 and row["domain"] == "photo"
    assert m.meta["class_names"] == NAMES
    assert row["relpath"] == f"images/{NAMES[0]}/{NAMES[0][4:]}_0000_7001.jpg"
    assert row["box"] == [0.0, 1.5, 100.0, 52.5]  # x, y, w, h = 0, 1.5, 100, 51 -> x0, y0, x1, y1
    keys = [(ROLES.index(r.role), r.domain, r.class_name, r.relpath) for r in m.rows.itertuples()]
    assert keys == sorted(keys)


def test_open_clean_splits_80_and_20_classes(full):
    m = get_dataset("cub").build_manifest(full, "fgir_open", "clean")
    c = m.counts()
    assert c["train"] == sum(PER_CLASS[k] for k in range(1, 81))
    assert c["val_query"] == c["val_gallery"] == sum(PER_CLASS[k] for k in range(81, 101))
    assert set(m.role("val_query")["class_id"]) == set(range(80, 100))
    assert c["query"] == 5924
    tv = get_dataset("cub").build_manifest(full, "fgir_open", "clean", trainval=True)
    assert tv.counts()["train"] == 5864 and tv.meta["notes"]["trainval"]


def test_closed_paper_is_the_official_split(full):
    m = get_dataset("cub").build_manifest(full, "fgir_closed", "paper")
    c = m.counts()
    assert (c["train"], c["query"], c["gallery"]) == (5994, 5794, 5794)


def test_closed_clean_val_follows_the_upstream_sampling_idiom(full):
    m = get_dataset("cub").build_manifest(full, "fgir_closed", "clean")
    split = [int(line.split()[1]) for line in (full / "CUB_200_2011/train_test_split.txt").read_text().splitlines()]
    labels = [int(line.split()[1]) for line in (full / "CUB_200_2011/image_class_labels.txt").read_text().splitlines()]
    expected = set()
    for cid in range(1, 201):
        ids = np.array([i + 1 for i in range(len(labels)) if labels[i] == cid and split[i] == 1])
        np.random.seed(cid)  # the upstream idiom, seed = official class id
        expected |= set(np.random.choice(ids, int(0.2 * len(ids)), replace=False).tolist())
    assert set(m.role("val_query")["image_id"].astype(int)) == expected
    assert set(m.role("val_gallery")["image_id"].astype(int)) == expected
    assert m.counts()["train"] == 5994 - len(expected) and len(expected) == 194 * 6 + 6 * 5
    assert m.counts()["query"] == 5794


def test_closed_train_gallery_option_marks_not_same_set(full):
    m = get_dataset("cub").build_manifest(full, "fgir_closed", "paper", gallery="train")
    assert (m.counts()["query"], m.counts()["gallery"]) == (5794, 5994)
    assert m.meta["same_set"] is False and m.meta["notes"]["gallery_train_overlap"]
    with pytest.raises(ConfigError, match="gallery"):
        get_dataset("cub").build_manifest(full, "fgir_closed", gallery="val")
    with pytest.raises(ConfigError, match="unknown option"):
        get_dataset("cub").build_manifest(full, "fgir_open", gallery="train")


def test_listing_order_does_not_change_the_manifest_bytes(scratch, full, shuffled_listing):
    adapter = get_dataset("cub")
    write_manifest(adapter.build_manifest(full, "fgir_closed"), scratch / "a.csv")
    shuffled_listing_on = listing_is_shuffled(shuffled_listing, full / "CUB_200_2011" / "images")
    write_manifest(adapter.build_manifest(full, "fgir_closed"), scratch / "b.csv")
    assert (scratch / "a.csv").read_bytes() == (scratch / "b.csv").read_bytes()
    assert (scratch / "a.meta.json").read_bytes() == (scratch / "b.meta.json").read_bytes()
    assert shuffled_listing_on


BROKEN = [  # (file, line number, replacement line, expected message fragment)
    ("bounding_boxes.txt", 5, "5 1.0 2.0 3.0", "bounding_boxes.txt:5: expected"),
    ("bounding_boxes.txt", 7, "7 1.0 2.0 abc 4.0", "bounding_boxes.txt:7: box values are not numbers"),
    ("images.txt", 3, "4 001.Black_footed_Albatross/x.jpg", "images.txt:3: id '4' where 3"),
    ("train_test_split.txt", 9, "9 2", "train_test_split.txt:9: is_training_image '2'"),
    ("image_class_labels.txt", 2, "2 201", "image_class_labels.txt:2: class id '201'"),
    ("image_class_labels.txt", 4, "4 150", "images.txt:4: image"),
    ("classes.txt", 200, "200 200.Common Yellowthroat", "classes.txt:200: expected"),
]


@pytest.mark.parametrize("fname,lineno,replacement,fragment", BROKEN)
def test_malformed_metadata_line_names_file_and_line(scratch, tiny, fname, lineno, replacement, fragment):
    ds = copy_of(tiny, scratch)
    lines = (ds / fname).read_text().splitlines()
    lines[lineno - 1] = replacement
    (ds / fname).write_text("\n".join(lines) + "\n")
    out = scratch / "m.csv"
    with pytest.raises(DataError) as exc:
        write_manifest(get_dataset("cub").build_manifest(scratch, "fgir_open"), out)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    assert not out.exists()
    assert any(fragment in p for p in get_dataset("cub").verify(scratch).problems)


def test_short_metadata_file_and_missing_file(scratch, tiny):
    ds = copy_of(tiny, scratch)
    lines = (ds / "train_test_split.txt").read_text().splitlines()
    (ds / "train_test_split.txt").write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(DataError, match=r"train_test_split.txt: 157 lines but images.txt lists 160"):
        get_dataset("cub").build_manifest(scratch, "fgir_closed")
    (ds / "train_test_split.txt").write_text("\n".join(lines) + "\n")
    (ds / "bounding_boxes.txt").unlink()
    with pytest.raises(DataError, match=r"bounding_boxes.txt: metadata file missing"):
        get_dataset("cub").build_manifest(scratch, "fgir_closed")


def test_blank_lines_only_tolerated_at_the_end(scratch, tiny):
    ds = copy_of(tiny, scratch)
    text = (ds / "bounding_boxes.txt").read_text()
    (ds / "bounding_boxes.txt").write_text(text + "\n\n")
    assert get_dataset("cub").build_manifest(scratch, "fgir_open").counts()["query"] == 64
    lines = text.splitlines()
    (ds / "bounding_boxes.txt").write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt:6: expected"):
        get_dataset("cub").build_manifest(scratch, "fgir_open")


def test_listed_but_missing_image_is_named(scratch, tiny):
    ds = copy_of(tiny, scratch)
    line12 = (ds / "images.txt").read_text().splitlines()[11]
    (ds / "images" / line12.split()[1]).unlink()
    with pytest.raises(DataError) as exc:
        get_dataset("cub").build_manifest(scratch, "fgir_open")
    msg = str(exc.value)
    assert "images.txt:12" in msg and line12.split()[1] in msg and "1 of 160" in msg and "\n" not in msg


def test_synth_tiny_holds_the_derived_classes_and_role_counts(scratch):
    cfg = yaml.safe_load((dataset_cards_dir() / "cub.yaml").read_text())["synthetic"]["tiny"]
    ids = [cid for first, k in cfg["from_ranges"] for cid in range(first, first + k)]
    n, half = cfg["per_class"], cfg["per_class"] // 2  # the card: half of each class is official train
    adapter = get_dataset("cub")
    ds = adapter.synth(scratch, "tiny", seed=0)
    assert {c: n for c, n in files_per_class(ds / "images").items() if n} == {NAMES[c - 1]: n for c in ids}
    labels = [int(line.split()[1]) for line in (ds / "image_class_labels.txt").read_text().splitlines()]
    train = [line.split()[1] == "1" for line in (ds / "train_test_split.txt").read_text().splitlines()]
    assert {c: sum(t for lab, t in zip(labels, train) if lab == c) for c in ids} == dict.fromkeys(ids, half)
    report = adapter.verify(scratch)
    assert report.ok, report.problems

    def within(lo: int, hi: int) -> int:
        return n * sum(lo <= c <= hi for c in ids)

    n_val = len(ids) * (half * 20 // 100)  # §5.2: sample(train images of the class, 0.20) per class
    expected = {  # §5.2: open = classes 1-80 | 81-100 | 101-200; closed = official train | test
        ("fgir_open", "clean"): {"train": within(1, 80), "val_query": within(81, 100),
                                 "val_gallery": within(81, 100), "query": within(101, 200),
                                 "gallery": within(101, 200)},
        ("fgir_open", "paper"): {"train": within(1, 100), "val_query": 0, "val_gallery": 0,
                                 "query": within(101, 200), "gallery": within(101, 200)},
        ("fgir_closed", "clean"): {"train": len(ids) * half - n_val, "val_query": n_val, "val_gallery": n_val,
                                   "query": len(ids) * half, "gallery": len(ids) * half},
        ("fgir_closed", "paper"): {"train": len(ids) * half, "val_query": 0, "val_gallery": 0,
                                   "query": len(ids) * half, "gallery": len(ids) * half},
    }
    for (protocol, variant), counts in expected.items():
        assert adapter.build_manifest(scratch, protocol, variant).counts() == counts, (protocol, variant)
    for line in (ds / "bounding_boxes.txt").read_text().splitlines():
        _, x, y, w, h = map(float, line.split())
        assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= 64 and y + h <= 64
        assert w * h < 64 * 64 * 0.9


def test_verify_reports_bad_images_unlisted_files_and_wrong_names(scratch, tiny):
    ds = copy_of(tiny, scratch)
    names = [line.split()[1] for line in (ds / "images.txt").read_text().splitlines()]
    (ds / "images" / names[0]).write_bytes(b"")
    data = (ds / "images" / names[1]).read_bytes()
    (ds / "images" / names[1]).write_bytes(data[: len(data) // 3])
    (ds / "images" / NAMES[0] / "stray.jpg").write_bytes(data)
    classes = (ds / "classes.txt").read_text().replace("017.Cardinal", "017.Northern_Cardinal")
    (ds / "classes.txt").write_text(classes)
    problems = get_dataset("cub").verify(scratch).problems
    assert any("zero-byte" in p and names[0] in p for p in problems)
    assert any("truncated" in p and names[1] in p for p in problems)
    assert any("stray.jpg" in p and "not in images.txt" in p for p in problems)
    assert any("classes.txt:17" in p and "017.Cardinal" in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_manifest_boxes_and_read_box_file_follow_bounding_boxes_txt(scratch, tiny):
    """The manifest's box column and `read_box_file` both give [x, y, x + w, y + h] of the official lines."""
    from xdomain_bench.data.cub import read_box_file

    ds = tiny / "CUB_200_2011"
    want = {}
    for line in (ds / "bounding_boxes.txt").read_text().splitlines():
        i, x, y, w, h = line.split()
        want[int(i)] = [float(x), float(y), float(x) + float(w), float(y) + float(h)]
    rows = get_dataset("cub").build_manifest(tiny, "fgir_closed").rows
    assert {int(i): list(b) for i, b in zip(rows["image_id"], rows["box"])} == want
    assert read_box_file(ds / "bounding_boxes.txt") == want
    sparse = scratch / "boxes.txt"
    sparse.write_text("7 1 2 3 4\n3 0.5 0 10 10\n")
    assert read_box_file(sparse) == {7: [1.0, 2.0, 4.0, 6.0], 3: [0.5, 0.0, 10.5, 10.0]}
    for text, fragment in (("7 1 2 3 4\n7 1 2 3 4\n", "boxes.txt:2: image id 7 appears twice"),
                           ("0 1 2 3 4\n", "boxes.txt:1: expected '<image_id> <x> <y> <width> <height>'"),
                           ("5 1 2 0 4\n", "boxes.txt:1: box needs x, y >= 0 and width, height > 0")):
        sparse.write_text(text)
        with pytest.raises(DataError, match=fragment):
            read_box_file(sparse)
    with pytest.raises(DataError, match="box file not found"):
        read_box_file(scratch / "none.txt")
