"""TU-Berlin-Extended adapter (PROTOCOLS.md §4) against fixture trees in the official layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from dn_fixture import files_per_class, listing_is_shuffled, two_domain_roles

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.manifest import ROLES, write_manifest
from xdomain_bench.errors import DataError
from xdomain_bench.paths import dataset_cards_dir, splits_dir


def _lines(name: str) -> list[str]:
    return (splits_dir() / name).read_text(encoding="utf-8").splitlines()


CLASSES = _lines("tuberlin_classes.txt")
TEST = _lines("tuberlin_test_classes_random30.txt")
VAL = _lines("tuberlin_val_classes.txt")
# Photo folder names as shipped in the extended-photo archive (upstream download script renames them).
PHOTO_TYPOS = {"trombone": "tromobone", "chandelier": "chandeler", "giraffe": "griaffe", "diamond": "diamod",
               "spider": "spidar", "space_shuttle": "spacesshuttle", "wrist_watch": "wristwatching",
               "mouse_(animal)": "mouse", "pipe_(for_smoking)": "pipe"}


def raw_photo_folder(cls: str) -> str:
    return PHOTO_TYPOS.get(cls, re.sub(r"[_()]", "", cls))


def raw_sketch_folder(cls: str) -> str:
    return {"t_shirt": "t-shirt", "wrist_watch": "wrist-watch", "ice_cream_cone": "ice-cream-cone"}.get(
        cls, cls.replace("_", " "))


def n_sketches(i: int) -> int:
    return 1 + i % 2


def make_tree(root: Path, folder: str = "TUBerlin", raw: bool = False, reverse: bool = False,
              classes: list[str] = CLASSES) -> Path:
    ds = root / folder
    order = list(enumerate(classes))
    for i, cls in reversed(order) if reverse else order:
        sk = ds / "sketches" / (raw_sketch_folder(cls) if raw else cls)
        ph = ds / "images" / (raw_photo_folder(cls) if raw else cls)
        sk.mkdir(parents=True)
        ph.mkdir(parents=True)
        for k in range(n_sketches(i)):
            (sk / f"{i * 80 + k + 1}.png").write_bytes(b"x")
        (ph / f"p{i}.{'JPEG' if raw else 'jpg'}").write_bytes(b"x")
    return ds



@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tub")
    make_tree(root)
    return root


def classes_of(m, role: str) -> set[str]:
    return set(m.role(role)["class_name"])


def test_shipped_class_list_is_normalised_and_covers_the_splits():
    assert len(CLASSES) == len(set(CLASSES)) == 250
    assert CLASSES == sorted(CLASSES)
    assert all(re.fullmatch(r"[a-z0-9_()]+", c) for c in CLASSES)
    assert set(TEST) <= set(CLASSES) and set(VAL) <= set(CLASSES)
    assert len(TEST) == 30 and len(VAL) == 20 and not set(TEST) & set(VAL)
    assert (splits_dir() / "tuberlin_classes.txt").read_bytes().endswith(b"zebra\n")


def test_clean_is_200_train_20_val_30_test(tree):
    m = get_dataset("tuberlin").build_manifest(tree, "uccdr_random30", "clean")
    assert classes_of(m, "query") == classes_of(m, "gallery") == set(TEST)
    assert classes_of(m, "val_query") == classes_of(m, "val_gallery") == set(VAL)
    train = classes_of(m, "train")
    assert len(train) == 200 and train == set(CLASSES) - set(TEST) - set(VAL)
    assert set(m.role("query")["domain"]) == {"sketches"} and set(m.role("gallery")["domain"]) == {"images"}
    assert len(m.role("query")) == sum(n_sketches(CLASSES.index(c)) for c in TEST)
    assert len(m.role("gallery")) == 30
    assert m.meta["inverted_domains"] == ["sketches"]
    ids = dict(zip(m.rows["class_name"], m.rows["class_id"]))
    assert ids == {c: CLASSES.index(c) for c in ids}  # sorted index (the list is sorted)
    assert m.meta["class_names"] == CLASSES
    keys = [(ROLES.index(r.role), r.domain, r.class_name, r.relpath) for r in m.rows.itertuples()]
    assert keys == sorted(keys)


def test_paper_trains_on_220_classes_and_does_not_invert(tree):
    m = get_dataset("tuberlin").build_manifest(tree, "uccdr_random30", "paper")
    assert len(classes_of(m, "train")) == 220 and not classes_of(m, "train") & set(TEST)
    assert m.counts()["val_query"] == 0 and m.meta["inverted_domains"] == []
    assert m.meta["notes"]["no_val_split"] and m.meta["notes"]["sketches_not_inverted"]


def test_raw_names_are_normalised_and_alias_folder_is_accepted(scratch, tree):
    ds = make_tree(scratch, folder="TU-Berlin", raw=True)
    assert (ds / "sketches" / "flying bird").is_dir() and (ds / "images" / "flyingbird").is_dir()
    raw = get_dataset("tuberlin").build_manifest(scratch, "uccdr_random30", "clean")
    ref = get_dataset("tuberlin").build_manifest(tree, "uccdr_random30", "clean")
    assert raw.counts() == ref.counts()
    for role in ROLES:
        assert classes_of(raw, role) == classes_of(ref, role)
    assert list(raw.rows["class_id"]) == list(ref.rows["class_id"])
    # PROTOCOLS §4.1: relpaths take the prepared (canonical) form, so both trees give the same bytes
    write_manifest(raw, scratch / "raw.csv")
    write_manifest(ref, scratch / "prepared.csv")
    assert (scratch / "raw.csv").read_bytes() == (scratch / "prepared.csv").read_bytes()
    assert (scratch / "raw.meta.json").read_bytes() == (scratch / "prepared.meta.json").read_bytes()
    i = CLASSES.index("trombone")
    photos = raw.rows[raw.rows["domain"] == "images"]
    assert list(photos[photos["class_name"] == "trombone"]["relpath"]) == [f"images/trombone/p{i}.jpg"]
    assert f"sketches/t_shirt/{CLASSES.index('t_shirt') * 80 + 1}.png" in set(raw.rows["relpath"])
    paths = dict(zip(raw.rows["relpath"], get_dataset("tuberlin").file_paths(scratch, list(raw.rows["relpath"]))))
    assert paths[f"images/trombone/p{i}.jpg"] == ds / "images" / "tromobone" / f"p{i}.JPEG"
    assert paths[f"sketches/t_shirt/{CLASSES.index('t_shirt') * 80 + 1}.png"].parent == ds / "sketches" / "t-shirt"
    j = CLASSES.index("mouse_(animal)")
    assert paths[f"images/mouse_(animal)/p{j}.jpg"] == ds / "images" / "mouse" / f"p{j}.JPEG"
    assert all(p.is_file() for p in paths.values())
    counts = get_dataset("tuberlin").verify(scratch).counts
    assert counts["images_unnormalised_folders"] > 0 and counts["sketches_unnormalised_folders"] > 0


def test_colliding_folder_names_are_refused(scratch):
    ds = make_tree(scratch)
    (ds / "sketches" / "flying bird").mkdir()
    with pytest.raises(DataError, match=r"flying bird.*flying_bird|flying_bird.*flying bird") as exc:
        get_dataset("tuberlin").build_manifest(scratch, "uccdr_random30")
    assert "\n" not in str(exc.value)


def test_photo_folder_without_sketch_class_is_refused(scratch):
    ds = make_tree(scratch)
    (ds / "images" / "unicornz").mkdir()
    with pytest.raises(DataError, match="unicornz.*match no sketches"):
        get_dataset("tuberlin").build_manifest(scratch, "uccdr_random30")


def test_two_files_with_one_canonical_name_are_refused(scratch):
    ds = make_tree(scratch, raw=True)
    folder = ds / "images" / raw_photo_folder("trombone")
    (folder / f"p{CLASSES.index('trombone')}.jpg").write_bytes(b"y")  # beside p<i>.JPEG
    with pytest.raises(DataError, match=r"both normalise to 'p\d+\.jpg'") as exc:
        get_dataset("tuberlin").build_manifest(scratch, "uccdr_random30")
    assert str(folder) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_test_class_is_refused_unless_allowed(scratch):
    make_tree(scratch, classes=[c for c in CLASSES if c != "banana"])
    with pytest.raises(DataError, match="banana"):
        get_dataset("tuberlin").build_manifest(scratch, "uccdr_random30")
    m = get_dataset("tuberlin").build_manifest(scratch, "uccdr_random30", allow_missing_classes=True)
    assert classes_of(m, "query") == set(TEST) - {"banana"}


def test_listing_order_does_not_change_the_manifest_bytes(scratch, tree, shuffled_listing):
    make_tree(scratch / "b", reverse=True)
    adapter = get_dataset("tuberlin")
    write_manifest(adapter.build_manifest(tree, "uccdr_random30"), scratch / "a.csv")
    shuffled_listing_on = listing_is_shuffled(shuffled_listing, scratch / "b" / "TUBerlin" / "sketches")
    write_manifest(adapter.build_manifest(scratch / "b", "uccdr_random30"), scratch / "b.csv")
    assert (scratch / "a.csv").read_bytes() == (scratch / "b.csv").read_bytes()
    assert (scratch / "a.meta.json").read_bytes() == (scratch / "b.meta.json").read_bytes()
    assert shuffled_listing_on


def test_verify_checks_a_real_tree_against_the_card(tree):
    problems = get_dataset("tuberlin").verify(tree).problems
    assert any("do not hold exactly 80 files" in p for p in problems)
    assert any("expected about 204489" in p for p in problems)
    assert not any("class folders missing" in p for p in problems)


def test_synth_tiny_holds_the_derived_classes_and_role_counts(scratch):
    cfg = yaml.safe_load((dataset_cards_dir() / "tuberlin.yaml").read_text())["synthetic"]["tiny"]
    # §4.2 lists: the first `test` test classes, the first `val` val classes, the first `train` others
    classes = TEST[: cfg["test"]] + VAL[: cfg["val"]] + [c for c in CLASSES if c not in TEST + VAL][: cfg["train"]]
    adapter = get_dataset("tuberlin")
    ds = adapter.synth(scratch, "tiny", seed=0)
    for domain, ext in (("sketches", ".png"), ("images", ".jpg")):
        assert files_per_class(ds / domain) == dict.fromkeys(classes, cfg["per_class"]), domain
        assert {f.suffix for f in (ds / domain).rglob("*") if f.is_file()} == {ext}
    report = adapter.verify(scratch)
    assert report.ok, report.problems
    for variant in ("clean", "paper"):
        m = adapter.build_manifest(scratch, "uccdr_random30", variant)
        assert m.counts() == two_domain_roles(set(classes), set(TEST), set(VAL), cfg["per_class"], variant), variant
        assert classes_of(m, "query") == set(TEST[: cfg["test"]])
    assert classes_of(m, "train") == set(classes) - set(TEST)  # paper: val classes train too


def test_verify_reports_bad_and_missing_files(scratch):
    adapter = get_dataset("tuberlin")
    ds = adapter.synth(scratch, "tiny")
    sketches = sorted((ds / "sketches").rglob("*.png"))
    sketches[0].write_bytes(b"")
    sketches[-1].write_bytes(sketches[-1].read_bytes()[:100])
    problems = adapter.verify(scratch).problems
    assert any("zero-byte" in p and str(sketches[0]) in p for p in problems)
    assert any(str(sketches[-1]) in p for p in problems)
    assert all("\n" not in p for p in problems)
