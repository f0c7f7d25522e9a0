"""FDRD adapter (PROTOCOLS.md §6) on a hand-written tree in the released JSON format.

The tree: pets (no class_name; CoOp split file), aircraft (class only in the key, `F-16A_B` / `F_A-18`;
no val file, so the 20 % fallback applies), flowers (class_name + number; split file), dtd (`inter_*`,
file names with extensions, empty negatives, no split file; one image outside its class folder).
Expectations are written out by hand from the spec, or recomputed with the upstream numpy idiom.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.fdrd import source_dataset, write_canonical_jsonl
from xdomain_bench.data.manifest import read_manifest, write_manifest
from xdomain_bench.errors import DataError

PETS_TEST = {
    "Abyssinian_1": {"positive": "An Abyssinian cat with ruddy fur lies on a sofa.",
                     "negative": ["An Abyssinian cat with ruddy fur lies on a sofa.",
                                  "A Bengal cat with ruddy fur lies on a sofa.",
                                  "An  Abyssinian cat with ruddy fur lies on a sofa. ",
                                  "A Birman cat with ruddy fur lies on a sofa."]},
    "Abyssinian_2": {"positive": "An Abyssinian cat with ruddy fur lies on a sofa.",
                     "negative": ["A Bombay cat with ruddy fur lies on a sofa.",
                                  "A Persian cat with ruddy fur lies on a sofa.",
                                  "A Sphynx cat with ruddy fur lies on a sofa.",
                                  "A Ragdoll cat with ruddy fur lies on a sofa."]},
    "american_bulldog_3": {"positive": "An american bulldog stands on grass.",
                           "negative": ["A boxer stands on grass.", "A pug stands on grass.",
                                        "A boxer stands  on grass.", "A beagle stands on grass."]},
    "British_Shorthair_10": {"positive": "A British Shorthair sleeps in a basket.",
                             "negative": ["A Siamese sleeps in a basket.", "A Bengal sleeps in a basket.",
                                          "A Birman sleeps in a basket.", "A Bombay sleeps in a basket."]},
}
PETS_TRAIN = ["Abyssinian_5", "Abyssinian_6", "British_Shorthair_11", "american_bulldog_7",
              "american_bulldog_8"]
PETS_VAL = ["Abyssinian_6.jpg", "american_bulldog_8.jpg"]  # CoOp split file, relative to oxford_pets/images

PLANE_TEST = {"F-16A_B_0012345": "0012345", "F_A-18_0023456": "0023456", "BAE 146-200_1234567": "1234567",
              "Cessna 172_0000042": "0000042"}
PLANE_TRAIN = {**{f"F-16A_B_{i:07d}": f"{i:07d}" for i in (101, 102, 103, 104, 105)},
               "Cessna 172_0000201": "0000201", "Cessna 172_0000202": "0000202"}

FLOWER_TEST = {"sword_lily_image_00012": ("sword_lily", "00012"),
               "pink_primrose_image_00001": ("pink_primrose", "00001")}
FLOWER_TRAIN = {"sword_lily_image_00100": ("sword_lily", "00100"),
                "pink_primrose_image_00101": ("pink_primrose", "00101")}
FLOWER_VAL = ["image_00101.jpg"]

DTD_TEST = {"banded_0060.jpg": "banded", "zigzagged_0001.jpg": "zigzagged"}
DTD_TRAIN = {f"banded_{i:04d}.jpg": "banded" for i in range(1, 6)}
DTD_MISPLACED = "zigzagged_0001.jpg"  # stored under dtd/images/extra/, found by the basename fallback


def write_image(path: Path, shade: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 64, 255 - shade)).save(path, quality=90)


def _dump(path: Path, obj: dict, shuffle: bool) -> None:
    keys = list(obj)
    if shuffle:
        random.Random(7).shuffle(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: obj[k] for k in keys}, indent=4), encoding="utf-8")


def _caption(key: str) -> str:
    return f"a photo of {key}."


def make_tree(root: Path, shuffle: bool = False) -> Path:
    """Write the fixture under `root` (the data root); `shuffle` permutes keys and file-writing order."""
    files: list[tuple[Path, dict]] = []
    fdrd = root / "FDRD"
    pets_test = {k: {"file_name": k, "file_path": f"/home/author/pets/{k}.jpg", **v}
                 for k, v in PETS_TEST.items()}
    pets_train = {k: {"file_name": k, "file_path": "YOUR_IMAGE_PATH", "positive": _caption(k), "negative": []}
                  for k in PETS_TRAIN}
    files += [(fdrd / "pets_test.json", pets_test), (fdrd / "pets_train.json", pets_train)]
    plane = {}
    for name, table in (("test", PLANE_TEST), ("train", PLANE_TRAIN)):
        plane[name] = {k: {"file_name": v, "file_path": "YOUR_IMAGE_PATH", "positive": _caption(k),
                           "negative": [_caption(k + "x")] * (4 if name == "test" else 0)}
                       for k, v in table.items()}
    files += [(fdrd / "test" / "plane_test.json", plane["test"]),
              (fdrd / "train" / "plane_train.json", plane["train"])]
    for name, table in (("test", FLOWER_TEST), ("train", FLOWER_TRAIN)):
        obj = {k: {"file_name": k, "class_name": c, "number": n, "file_path": f"/x/renamed/{c}/{k}.jpg",
                   "positive": _caption(k), "negative": [_caption(c + str(i)) for i in range(4)]}
               for k, (c, n) in table.items()}
        files.append(((fdrd if name == "test" else fdrd / "train") / f"flower_{name}.json", obj))
    for name, table in (("test", DTD_TEST), ("train", DTD_TRAIN)):
        obj = {k: {"file_name": k, "class_name": c, "file_path": "YOUR_IMAGE_PATH", "positive": _caption(k),
                   "negative": []} for k, c in table.items()}
        files.append((fdrd / name / f"inter_dtd_{name}.json", obj))
    if shuffle:
        files.reverse()
    for path, obj in files:
        _dump(path, obj, shuffle)
    (fdrd / "README.json").write_text("{}", encoding="utf-8")  # not a caption file: skipped

    images = [f"oxford_pets/images/{k}.jpg" for k in [*PETS_TEST, *PETS_TRAIN]]
    images += [f"fgvc_aircraft/images/{v}.jpg" for v in [*PLANE_TEST.values(), *PLANE_TRAIN.values()]]
    images += [f"oxford_flowers/jpg/image_{n}.jpg"
               for _, n in [*FLOWER_TEST.values(), *FLOWER_TRAIN.values()]]
    images += [f"dtd/images/{c}/{k}" for k, c in [*DTD_TEST.items(), *DTD_TRAIN.items()]
               if k != DTD_MISPLACED]
    images += [f"dtd/images/extra/{DTD_MISPLACED}"]
    for i, rel in enumerate(sorted(images, reverse=shuffle)):
        write_image(root / rel, shade=i * 7 % 256)
    split = {"train": [[f"{k}.jpg", 0, k.rsplit("_", 1)[0].lower()] for k in PETS_TRAIN
                       if f"{k}.jpg" not in PETS_VAL],
             "val": [[p, 0, p.rsplit("_", 1)[0].lower()] for p in PETS_VAL], "test": []}
    (root / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(json.dumps(split), encoding="utf-8")
    split = {"train": [["image_00100.jpg", 1, "sword lily"]],
             "val": [[p, 0, "pink primrose"] for p in FLOWER_VAL],
             "test": []}
    (root / "oxford_flowers/split_zhou_OxfordFlowers.json").write_text(json.dumps(split), encoding="utf-8")
    return root


# --- expectations written out from PROTOCOLS §6 -------------------------------------------------------
# datasets="all": offsets over the sorted folders dtd (2 classes), fgvc_aircraft (4), oxford_flowers (2),
# oxford_pets (3); category ids = index in the sorted distinct test categories (capitals sort first).
EXPECTED_TEST = {
    ("dtd/images/banded/banded_0060.jpg", "banded", 0, "banded_0060.jpg"),
    ("dtd/images/extra/zigzagged_0001.jpg", "zigzagged", 1, "zigzagged_0001.jpg"),
    ("fgvc_aircraft/images/1234567.jpg", "BAE 146-200", 2, "BAE 146-200_1234567"),
    ("fgvc_aircraft/images/0000042.jpg", "Cessna 172", 3, "Cessna 172_0000042"),
    ("fgvc_aircraft/images/0012345.jpg", "F-16A/B", 4, "F-16A_B_0012345"),
    ("fgvc_aircraft/images/0023456.jpg", "F/A-18", 5, "F_A-18_0023456"),
    ("oxford_flowers/jpg/image_00001.jpg", "pink_primrose", 6, "pink_primrose_image_00001"),
    ("oxford_flowers/jpg/image_00012.jpg", "sword_lily", 7, "sword_lily_image_00012"),
    ("oxford_pets/images/Abyssinian_1.jpg", "Abyssinian", 8, "Abyssinian_1"),
    ("oxford_pets/images/Abyssinian_2.jpg", "Abyssinian", 8, "Abyssinian_2"),
    ("oxford_pets/images/British_Shorthair_10.jpg", "British_Shorthair", 9, "British_Shorthair_10"),
    ("oxford_pets/images/american_bulldog_3.jpg", "american_bulldog", 10, "american_bulldog_3"),
}
ABY1_CLEAN = ["A Bengal cat with ruddy fur lies on a sofa.", "A Birman cat with ruddy fur lies on a sofa."]
BULLDOG_CLEAN = ["A boxer stands on grass.", "A pug stands on grass.", "A beagle stands on grass."]


def upstream_val(ids: list[str], seed: int, frac: float = 0.20) -> set[str]:
    """The upstream idiom of §1.3 (np.random.seed + choice without replacement) on sorted ids."""
    arr = sorted(ids)
    return set(np.random.RandomState(seed).choice(arr, int(frac * len(arr)), replace=False).tolist())


@pytest.fixture
def root(tmp_path) -> Path:
    return make_tree(tmp_path / "data")


@pytest.fixture(scope="module")
def adapter():
    return get_dataset("fdrd")


def quads(rows) -> set[tuple]:
    return {(r.relpath, r.class_name, int(r.class_id), r.image_id) for r in rows.itertuples()}


def csv_bytes(manifest, path: Path) -> bytes:
    return write_manifest(manifest, path).read_bytes()


# --- released format -> manifest ----------------------------------------------------------------------
def test_released_files_give_entries_classes_and_coop_paths(root, adapter):
    m = adapter.build_manifest(root, "itr", "clean", datasets="all")
    query, gallery = m.role("query"), m.role("gallery")
    assert quads(query) == EXPECTED_TEST
    assert query.equals(gallery.assign(role="query"))  # one query and one identical gallery row per image
    assert list(zip(query.class_name, query.relpath)) == sorted(zip(query.class_name, query.relpath))
    assert set(query.domain) == {"photo"}
    assert m.meta["class_names"] == ["banded", "zigzagged", "BAE 146-200", "Cessna 172", "F-16A/B", "F/A-18",
                                     "pink_primrose", "sword_lily", "Abyssinian", "British_Shorthair",
                                     "american_bulldog"]
    assert {d: v["class_offset"] for d, v in m.meta["datasets"].items()} == {
        "dtd": 0, "fgvc_aircraft": 2, "oxford_flowers": 6, "oxford_pets": 8}
    assert {source_dataset(r) for r in query.relpath} == {"dtd", "fgvc_aircraft", "oxford_flowers",
                                                            "oxford_pets"}
    assert adapter.image_root(root) == root
    for rel in m.rows.relpath:
        assert (adapter.image_root(root) / rel).is_file()
    by_id = {r.image_id: r for r in query.itertuples()}
    assert by_id["Abyssinian_1"].captions == [PETS_TEST["Abyssinian_1"]["positive"]]
    assert by_id["banded_0060.jpg"].hard_negatives == []


def test_protocol_constants_follow_section_8(adapter):
    info = adapter.protocol_info(adapter.default_protocol())
    assert (info.task, info.same_set, info.selection_metric) == ("itr", False, "RSUM")
    assert set(info.metrics) >= {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM"}
    assert adapter.inverted_domains("clean") == adapter.inverted_domains("paper") == set()


def test_default_selects_the_core_datasets(root, adapter):
    m = adapter.build_manifest(root)
    assert m.meta["selected_datasets"] == ["fgvc_aircraft", "oxford_flowers", "oxford_pets"]
    ids = {r[3]: r[2] for r in quads(m.role("query"))}
    assert ids["BAE 146-200_1234567"] == 0 and ids["pink_primrose_image_00001"] == 4
    assert ids["american_bulldog_3"] == 8
    assert not any(r.startswith("dtd/") for r in m.rows.relpath)
    # the FDRD folder itself is accepted as the root; relpaths stay relative to the data root
    assert adapter.image_root(root / "FDRD") == root
    assert adapter.build_manifest(root / "FDRD").rows.equals(m.rows)


def test_clean_val_from_coop_split_files_and_seeded_fallback(root, adapter):
    m = adapter.build_manifest(root, "itr", "clean", datasets="all")
    val, train = set(m.role("val_query").image_id), set(m.role("train").image_id)
    assert list(m.role("val_query").image_id) == list(m.role("val_gallery").image_id)
    expected_val = {"Abyssinian_6", "american_bulldog_8", "pink_primrose_image_00101"}
    expected_val |= upstream_val([k for k in PLANE_TRAIN if k.startswith("F-16A_B")], seed=2)  # F-16A/B
    expected_val |= upstream_val(list(DTD_TRAIN), seed=0)  # banded; Cessna 172 has 2 -> floor(0.4) = 0
    assert val == expected_val and len(expected_val) == 5
    assert train | val == set(PETS_TRAIN) | set(PLANE_TRAIN) | set(FLOWER_TRAIN) | set(DTD_TRAIN)
    assert not train & val
    sources = m.meta["notes"]["validation"]
    assert sources["oxford_pets"].startswith("coop:") and sources["fgvc_aircraft"] == "fallback:0.2"


def test_paper_trains_on_all_train_entries_without_val(root, adapter):
    m = adapter.build_manifest(root, "itr", "paper", datasets="all")
    assert m.meta["counts"]["val_query"] == 0 == m.meta["counts"]["val_gallery"]
    all_train = set(PETS_TRAIN) | set(PLANE_TRAIN) | set(FLOWER_TRAIN) | set(DTD_TRAIN)
    assert set(m.role("train").image_id) == all_train
    assert quads(m.role("query")) == EXPECTED_TEST
    assert m.meta["notes"]["itr_relevance"] == "instance"


def test_hard_negatives_and_duplicate_captions_clean_vs_paper(root, adapter):
    clean = {r.image_id: r for r in adapter.build_manifest(root, datasets="pets").role("query").itertuples()}
    paper = {r.image_id: r for r in adapter.build_manifest(root, "itr", "paper", datasets="pets")
             .role("query").itertuples()}
    assert clean["Abyssinian_1"].hard_negatives == ABY1_CLEAN
    assert clean["american_bulldog_3"].hard_negatives == BULLDOG_CLEAN
    for key, entry in PETS_TEST.items():
        assert paper[key].hard_negatives == entry["negative"]  # as released, quirks included
    # duplicate captions stay one row per image in both variants; relevance is the evaluator's (§7.2)
    assert clean["Abyssinian_1"].captions == clean["Abyssinian_2"].captions
    stats = adapter.build_manifest(root, datasets="pets").meta["datasets"]["oxford_pets"]["stats"]
    assert stats == {"duplicate_caption_groups": 1, "duplicate_caption_images": 2,
                     "negatives_containing_caption": 1, "negatives_with_repeats": 2}


def test_shuffled_keys_and_file_order_give_byte_identical_manifests(tmp_path, adapter):
    a, b = make_tree(tmp_path / "a"), make_tree(tmp_path / "b", shuffle=True)
    text_a, text_b = ((t / "FDRD/pets_test.json").read_text() for t in (a, b))
    assert json.loads(text_a) == json.loads(text_b) and text_a != text_b
    built = {}
    for variant in ("clean", "paper"):
        ma = built[variant] = adapter.build_manifest(a, "itr", variant, datasets="all")
        mb = adapter.build_manifest(b, "itr", variant, datasets="all")
        assert csv_bytes(ma, tmp_path / f"a_{variant}.csv") == csv_bytes(mb, tmp_path / f"b_{variant}.csv")
        assert ma.meta["listing_sha256"] == mb.meta["listing_sha256"] == adapter.listing_sha256(a)
    back = read_manifest(tmp_path / "a_clean.csv")
    assert back.rows["captions"].tolist() == built["clean"].rows["captions"].tolist()
    assert back.rows["hard_negatives"].tolist() == built["clean"].rows["hard_negatives"].tolist()


# --- canonical JSONL ----------------------------------------------------------------------------------
def test_canonical_jsonl_written_in_the_spec_schema(root, adapter, tmp_path):
    m = adapter.build_manifest(root, "itr", "paper", datasets="all")
    written = write_canonical_jsonl(m, tmp_path / "canon")
    assert sorted(p.name for p in written) == sorted(f"{d}.{s}.jsonl" for d in
                                                     ("dtd", "fgvc_aircraft", "oxford_flowers", "oxford_pets")
                                                     for s in ("test", "train"))
    lines = (tmp_path / "canon/oxford_pets.test.jsonl").read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["image_id"] for o in objs] == sorted(PETS_TEST)
    first = objs[0]
    assert list(first) == ["image_id", "dataset", "split", "image_path", "category", "category_id",
                           "captions", "attributes", "hard_negatives", "source"]
    assert first == {"image_id": "Abyssinian_1", "dataset": "oxford_pets", "split": "test",
                     "image_path": "oxford_pets/images/Abyssinian_1.jpg", "category": "Abyssinian",
                     "category_id": 0, "captions": [PETS_TEST["Abyssinian_1"]["positive"]], "attributes": [],
                     "hard_negatives": PETS_TEST["Abyssinian_1"]["negative"], "source": "fdrd"}
    plane = [json.loads(x) for x in (tmp_path / "canon/fgvc_aircraft.test.jsonl").read_text().splitlines()]
    assert {(o["category"], o["category_id"]) for o in plane} == {
        ("BAE 146-200", 0), ("Cessna 172", 1), ("F-16A/B", 2), ("F/A-18", 3)}


def test_canonical_jsonl_round_trip(root, adapter, tmp_path):
    paper = adapter.build_manifest(root, "itr", "paper", datasets="all")
    clean = adapter.build_manifest(root, "itr", "clean", datasets="all")
    write_canonical_jsonl(paper, tmp_path / "paper")
    write_canonical_jsonl(clean, tmp_path / "clean.jsonl")  # one file holding every (dataset, split)
    cases = [(paper, "paper", tmp_path / "paper"), (clean, "clean", tmp_path / "paper"),
             (clean, "clean", tmp_path / "clean.jsonl")]
    for i, (want, variant, source) in enumerate(cases):
        got = adapter.build_manifest(root, "itr", variant, annotations=source)
        assert csv_bytes(got, tmp_path / f"got{i}.csv") == csv_bytes(want, tmp_path / f"want{i}.csv")
    splits = {json.loads(x)["split"] for x in (tmp_path / "clean.jsonl").read_text().splitlines()}
    assert splits == {"train", "val", "test"}


def test_canonical_jsonl_errors_name_file_and_line(root, adapter, tmp_path):
    paper = adapter.build_manifest(root, "itr", "paper", datasets="pets")
    path = write_canonical_jsonl(paper, tmp_path / "pets.jsonl")[0]
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["category_id"] = 2
    path.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"pets\.jsonl:2: category_id 2 for 'Abyssinian'"):
        adapter.build_manifest(root, "itr", "clean", annotations=path)
    path.write_text(lines[0] + "\n{\"image_id\": \n")
    with pytest.raises(DataError, match=r"pets\.jsonl:2:\d+: malformed JSON"):
        adapter.build_manifest(root, "itr", "clean", annotations=path)


# --- errors: one line naming file and key; nothing written --------------------------------------------
def one_line_error(adapter, root, **kwargs) -> str:
    out = root / "out.csv"
    with pytest.raises(DataError) as info:
        write_manifest(adapter.build_manifest(root, **kwargs), out)
    msg = str(info.value)
    assert "\n" not in msg and not out.exists() and not list(root.glob(".out.csv*"))
    return msg


def test_malformed_json_names_file_and_position(root, adapter):
    (root / "FDRD/pets_test.json").write_text('{\n  "Abyssinian_1": {"file_name": "Abyssinian_1",\n}\n')
    msg = one_line_error(adapter, root)
    assert "pets_test.json:3:1: malformed JSON" in msg


def test_unresolvable_image_names_file_and_key(root, adapter):
    (root / "oxford_pets/images/British_Shorthair_10.jpg").unlink()
    msg = one_line_error(adapter, root)
    assert "pets_test.json: key 'British_Shorthair_10': image not found" in msg
    assert "oxford_pets/images/British_Shorthair_10.jpg not found" in msg


def test_basename_fallback_needs_a_unique_hit(root, adapter):
    write_image(root / "dtd/images/other" / DTD_MISPLACED)
    msg = one_line_error(adapter, root, datasets="dtd")
    assert "inter_dtd_test.json: key 'zigzagged_0001.jpg'" in msg and "2 files named" in msg


def test_bad_entries_and_ambiguous_sources(root, adapter):
    data = json.loads((root / "FDRD/pets_test.json").read_text())
    data["Abyssinian_2"]["negative"] = "not a list"
    (root / "FDRD/pets_test.json").write_text(json.dumps(data))
    assert "pets_test.json: key 'Abyssinian_2': 'negative' must be a list" in one_line_error(adapter, root)
    (root / "FDRD/test").mkdir(exist_ok=True)
    (root / "FDRD/test/pets_test.json").write_text("{}")
    assert "two caption files supply oxford_pets test" in one_line_error(adapter, root)


def test_missing_core_file_says_how_to_choose_datasets(root, adapter):
    (root / "FDRD/test/plane_test.json").unlink()
    msg = one_line_error(adapter, root)
    assert "no test captions for fgvc_aircraft" in msg and "dtd, oxford_flowers, oxford_pets" in msg
    assert adapter.build_manifest(root, datasets="flowers,pets").meta["selected_datasets"] == [
        "oxford_flowers", "oxford_pets"]


def test_verify_reports_files_keys_and_bad_images(root, adapter):
    data = json.loads((root / "FDRD/pets_test.json").read_text())
    data["British_Shorthair_10"]["negative"] = data["British_Shorthair_10"]["negative"][:3]
    (root / "FDRD/pets_test.json").write_text(json.dumps(data))
    (root / "oxford_pets/images/Abyssinian_2.jpg").write_bytes(b"")
    data = (root / "oxford_flowers/jpg/image_00012.jpg").read_bytes()
    (root / "oxford_flowers/jpg/image_00012.jpg").write_bytes(data[: len(data) // 2])
    (root / "oxford_pets/images/American_bulldog_3.jpg").touch()
    (root / "oxford_pets/images/american_bulldog_3.jpg").unlink()
    report = adapter.verify(root)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "pets_test.json: key 'Abyssinian_2': zero-byte image" in text
    assert "flower_test.json: key 'sword_lily_image_00012': unreadable or truncated image" in text
    assert "pets_test.json: key 'american_bulldog_3': image not found" in text
    assert "pets_test.json: 4 entries, expected 3669" in text  # the fixture is not full size
    warnings = "\n".join(report.warnings)
    assert ("pets_test.json: 1 entries have 3 negatives (expected 4), e.g. key 'British_Shorthair_10'"
            in warnings)
    assert "inter_dtd" not in warnings and "pets_train" not in warnings  # [] is normal there
    assert "README.json: not a released FDRD caption-file name; ignored" in warnings
    assert not any("British_Shorthair_10" in p for p in report.problems)  # odd negatives only warn
