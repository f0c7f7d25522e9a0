"""Sketchy-Extended adapter (PROTOCOLS.md §3) against fixture trees in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from dn_fixture import files_per_class, listing_is_shuffled, two_domain_roles
from PIL import Image

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.manifest import ROLES, read_manifest, write_manifest
from xdomain_bench.errors import DataError
from xdomain_bench.paths import dataset_cards_dir, splits_dir

# PROTOCOLS.md §3.2, derived val classes (independent of the card).
VAL = {
    "uccdr_eccv21": ["bee", "castle", "fish", "hat", "horse", "pickup_truck", "pistol", "rabbit", "snail",
                     "squirrel", "volcano"],
    "uccdr_random25": ["bee", "chair", "frog", "helicopter", "hotdog", "pig", "pretzel", "skyscraper", "spoon",
                       "violin"],
}
TEST_FILE = {"uccdr_eccv21": "sketchy_test_classes_eccv2018.txt",
             "uccdr_random25": "sketchy_test_classes_random25.txt"}


def _lines(name: str) -> list[str]:
    return (splits_dir() / name).read_text(encoding="utf-8").splitlines()


CLASSES = _lines("sketchy_classes.txt")


def n_files(i: int) -> int:
    return 1 + i % 3


def make_tree(root: Path, sketch_rel: str = "sketch", classes: list[str] = CLASSES, reverse: bool = False) -> Path:
    """Official layout with 1-3 tiny files per class and domain (the manifest builder never decodes)."""
    ds = root / "Sketchy"
    order = list(enumerate(classes))
    for i, cls in reversed(order) if reverse else order:
        ks = range(n_files(i))
        for k in reversed(ks) if reverse else ks:
            for rel, ext in ((sketch_rel, ".png"), ("extended_photo", ".jpg")):
                (ds / rel / cls).mkdir(parents=True, exist_ok=True)
                (ds / rel / cls / f"n0{i:03d}_{k}{ext}").write_bytes(b"x")
    return ds



@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sk")
    make_tree(root)
    return root


def classes_of(m, role: str) -> set[str]:
    return set(m.role(role)["class_name"])


def files_of(classes) -> int:
    return sum(n_files(CLASSES.index(c)) for c in classes)


@pytest.mark.parametrize("protocol,n_train,n_val,n_test", [("uccdr_eccv21", 93, 11, 21),
                                                           ("uccdr_random25", 90, 10, 25)])
def test_clean_split_sizes_names_and_roles(tree, protocol, n_train, n_val, n_test):
    m = get_dataset("sketchy").build_manifest(tree, protocol, "clean")
    test = set(_lines(TEST_FILE[protocol]))
    assert len(test) == n_test
    assert classes_of(m, "query") == classes_of(m, "gallery") == test
    assert sorted(classes_of(m, "val_query")) == sorted(classes_of(m, "val_gallery")) == VAL[protocol]
    train = classes_of(m, "train")
    assert len(train) == n_train and not train & (test | set(VAL[protocol]))
    assert len(train | test | set(VAL[protocol])) == 125
    # domains per role and row counts from the fixture
    assert set(m.role("query")["domain"]) == {"sketch"} and set(m.role("gallery")["domain"]) == {"extended_photo"}
    assert set(m.role("val_query")["domain"]) == {"sketch"}
    assert set(m.role("val_gallery")["domain"]) == {"extended_photo"}
    assert len(m.role("query")) == files_of(test)
    assert len(m.role("train")) == 2 * files_of(train)
    assert m.meta["inverted_domains"] == ["sketch"] and m.meta["notes"] == {}


@pytest.mark.parametrize("protocol,n_train", [("uccdr_eccv21", 104), ("uccdr_random25", 100)])
def test_paper_trains_on_all_non_test_classes_without_val(tree, protocol, n_train):
    m = get_dataset("sketchy").build_manifest(tree, protocol, "paper")
    assert len(classes_of(m, "train")) == n_train
    assert m.counts()["val_query"] == m.counts()["val_gallery"] == 0
    assert classes_of(m, "query") == set(_lines(TEST_FILE[protocol]))
    assert m.meta["notes"]["no_val_split"] and m.meta["notes"]["test_selected_upstream"]
    assert m.meta["inverted_domains"] == ["sketch"]


def test_class_ids_are_sorted_indices_and_rows_in_normative_order(tree):
    m = get_dataset("sketchy").build_manifest(tree, "uccdr_eccv21", "clean")
    ids = dict(zip(m.rows["class_name"], m.rows["class_id"]))
    assert ids == {c: sorted(CLASSES).index(c) for c in ids}
    assert ids["car_(sedan)"] == sorted(CLASSES).index("car_(sedan)")
    assert m.meta["class_names"] == sorted(CLASSES)  # class_names[class_id] for the DataModule
    keys = [(ROLES.index(r.role), r.domain, r.class_name, r.relpath) for r in m.rows.itertuples()]
    assert keys == sorted(keys)


def test_archived_and_flattened_layouts_give_byte_identical_manifests(scratch, tree):
    ds = make_tree(scratch, sketch_rel="sketch/tx_000000000000")
    (ds / "sketch" / "tx_000000000001" / "ant").mkdir(parents=True)  # another augmentation: ignored
    (ds / "sketch" / "tx_000000000001" / "ant" / "extra.png").write_bytes(b"x")
    adapter = get_dataset("sketchy")
    for name, root in (("archived", scratch), ("flat", tree)):
        write_manifest(adapter.build_manifest(root, "uccdr_random25", "clean"), scratch / f"{name}.csv")
    assert (scratch / "archived.csv").read_bytes() == (scratch / "flat.csv").read_bytes()
    assert (scratch / "archived.meta.json").read_bytes() == (scratch / "flat.meta.json").read_bytes()
    m = read_manifest(scratch / "archived.csv")
    # PROTOCOLS §3.1: the canonical form is the flattened one, sketch/<class>/<file>
    q = m.role("query")
    assert all(p.startswith("sketch/") and p.count("/") == 2 for p in q["relpath"])
    paths = adapter.file_paths(scratch, list(m.rows["relpath"]))
    sketch_paths = [p for p, d in zip(paths, m.rows["domain"]) if d == "sketch"]
    assert sketch_paths and all(p.parent.parent.name == "tx_000000000000" and p.is_file() for p in sketch_paths)
    assert all(p.is_file() for p in paths)
    assert not any("tx_000000000001" in str(p) for p in paths)


def test_hyphenated_folder_is_refused_with_the_rename(scratch):
    classes = [c if c != "hot_air_balloon" else "hot-air_balloon" for c in CLASSES]
    make_tree(scratch, classes=classes)
    out = scratch / "m.csv"
    with pytest.raises(DataError) as exc:
        write_manifest(get_dataset("sketchy").build_manifest(scratch, "uccdr_eccv21"), out)
    msg = str(exc.value)
    assert "hot-air_balloon" in msg and "hot_air_balloon" in msg and "prepare" in msg and "\n" not in msg
    assert not out.exists()


def test_prepare_renames_then_manifest_builds(scratch):
    from xdomain_bench.data.sketchy import prepare

    classes = [{"hot_air_balloon": "hot-air_balloon", "jack_o_lantern": "jack-o-lantern"}.get(c, c) for c in CLASSES]
    make_tree(scratch, classes=classes)
    assert len(prepare(scratch)) == 4  # two classes in two domains
    m = get_dataset("sketchy").build_manifest(scratch, "uccdr_eccv21")
    assert {"hot_air_balloon", "jack_o_lantern"} <= set(m.rows["class_name"])


def test_class_outside_the_list_is_refused(scratch):
    make_tree(scratch, classes=CLASSES + ["unicorn"])
    with pytest.raises(DataError, match=r"unicorn.*not one of the 125") as exc:
        get_dataset("sketchy").build_manifest(scratch, "uccdr_eccv21")
    assert "\n" not in str(exc.value)


def test_missing_classes_are_refused_unless_allowed(scratch):
    make_tree(scratch, classes=[c for c in CLASSES if c != "zebra"])
    with pytest.raises(DataError, match="zebra"):
        get_dataset("sketchy").build_manifest(scratch, "uccdr_eccv21")
    m = get_dataset("sketchy").build_manifest(scratch, "uccdr_eccv21", allow_missing_classes=True)
    assert "zebra" not in set(m.rows["class_name"]) and len(classes_of(m, "train")) == 92


def test_listing_order_does_not_change_the_manifest_bytes(scratch, tree, shuffled_listing):
    make_tree(scratch / "b", reverse=True)
    adapter = get_dataset("sketchy")
    write_manifest(adapter.build_manifest(tree, "uccdr_eccv21"), scratch / "a.csv")
    shuffled_listing_on = listing_is_shuffled(shuffled_listing, scratch / "b" / "Sketchy" / "sketch")
    write_manifest(adapter.build_manifest(scratch / "b", "uccdr_eccv21"), scratch / "b.csv")
    assert (scratch / "a.csv").read_bytes() == (scratch / "b.csv").read_bytes()
    assert (scratch / "a.meta.json").read_bytes() == (scratch / "b.meta.json").read_bytes()
    assert shuffled_listing_on
    back = read_manifest(scratch / "b.csv")
    assert back.counts() == adapter.build_manifest(tree, "uccdr_eccv21").counts()


def tiny_synth_classes(cfg: dict) -> list[str]:
    """The classes the tiny tree should hold, from the shipped lists and §3.2's val classes: per protocol the first
    `test` test and `val` val classes not yet taken, then the first `train` classes that are never val or test."""
    picked: list[str] = []
    for protocol in ("uccdr_eccv21", "uccdr_random25"):
        for names, n in ((_lines(TEST_FILE[protocol]), cfg["test"]), (VAL[protocol], cfg["val"])):
            picked += [c for c in names if c not in picked][:n]
    held = {c for p in VAL for c in VAL[p] + _lines(TEST_FILE[p])}
    return picked + [c for c in CLASSES if c not in held][: cfg["train"]]


def test_synth_tiny_holds_the_derived_classes_and_role_counts(scratch):
    cfg = yaml.safe_load((dataset_cards_dir() / "sketchy.yaml").read_text())["synthetic"]["tiny"]
    classes = tiny_synth_classes(cfg)
    assert len(classes) == 2 * (cfg["test"] + cfg["val"]) + cfg["train"]  # the two protocols share no pick
    adapter = get_dataset("sketchy")
    ds = adapter.synth(scratch, "tiny", seed=0)
    for domain in ("sketch", "extended_photo"):
        assert files_per_class(ds / domain) == dict.fromkeys(classes, cfg["per_class"]), domain
    report = adapter.verify(scratch)
    assert report.ok, report.problems
    for protocol in ("uccdr_eccv21", "uccdr_random25"):
        test, val = set(_lines(TEST_FILE[protocol])), set(VAL[protocol])
        for variant in ("clean", "paper"):
            m = adapter.build_manifest(scratch, protocol, variant)
            expected = two_domain_roles(set(classes), test, val, cfg["per_class"], variant)
            assert m.counts() == expected, (protocol, variant)
            assert classes_of(m, "query") == set(classes) & test
    sketch = next((ds / "sketch").rglob("*.png"))
    photo = next((ds / "extended_photo").rglob("*.jpg"))
    with Image.open(sketch) as s, Image.open(photo) as p:
        assert s.format == "PNG" and p.format == "JPEG" and s.size == p.size == (64, 64)
        ink = (np.asarray(s.convert("RGB")) < 230).any(-1)
    assert 0.01 < ink.mean() < 0.3  # strokes (in the object's colour) on white, as real sketches


def test_synth_is_deterministic_by_seed(scratch):
    adapter = get_dataset("sketchy")
    a, b, c = (adapter.synth(scratch / n, "tiny", seed=s) for n, s in (("a", 0), ("b", 0), ("c", 1)))

    def files(d):
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    assert fa.keys() == fc.keys() and fa != fc


def test_verify_reports_bad_images_and_missing_class(scratch):
    adapter = get_dataset("sketchy")
    ds = adapter.synth(scratch, "tiny")
    photos = sorted((ds / "extended_photo").rglob("*.jpg"))
    photos[0].write_bytes(b"")
    photos[1].write_bytes(photos[1].read_bytes()[:200])
    victim = sorted((ds / "sketch").iterdir())[0]
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()
    problems = adapter.verify(scratch).problems
    assert any("zero-byte" in p and photos[0].name in p for p in problems)
    assert any(photos[1].name in p and "truncated" in p for p in problems)
    assert any(victim.name in p and "missing" in p for p in problems)
    assert all("\n" not in p for p in problems)
