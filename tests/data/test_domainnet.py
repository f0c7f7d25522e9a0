"""DomainNet manifests against PROTOCOLS §2, with expectations computed independently from the spec rules."""

from __future__ import annotations

import hashlib

import pytest
from dn_fixture import TreeModel as T
from dn_fixture import listing_is_shuffled

from xdomain_bench.data.base import get_dataset
from xdomain_bench.data.manifest import ROLES, write_manifest
from xdomain_bench.errors import ConfigError, DataError

ALL, DOMAINS, TEST, TRAIN, VAL = T.ALL, T.DOMAINS, T.TEST, T.TRAIN, T.VAL
n, files_of, chosen = T.n, T.files_of, T.chosen


def expected_counts(h: str, protocol: str = "ucdr", gallery: str = "unseen", seen: str | None = None,
                    variant_clean: bool = True, seen_classes: list[str] = TRAIN, val: bool = True) -> dict:
    """Role sizes from the spec's counting rules (floor via integer arithmetic)."""
    tq = [d for d in DOMAINS if d not in (h, "real")]
    train = sum(n(d, c) for d in tq for c in seen_classes)
    for i, c in enumerate(seen_classes):
        r = n("real", c)
        train += r * 92 // 100 - (r * 25 // 100 if variant_clean and i < 45 else 0)
    out = {"train": train,
           "val_query": sum(n(d, c) * 30 // 100 for d in tq for c in VAL) if val else 0,
           "val_gallery": sum(n("real", c) for c in VAL) if val else 0}
    if protocol == "udcdr":
        p = 10 if h == "quickdraw" else 25
        out["query"] = sum(n(h, c) * p // 100 for c in TRAIN[:45])
        out["gallery"] = sum(n("real", c) * p // 100 for c in TRAIN[:45])
    else:
        qd = h if protocol == "ucdr" else seen
        out["query"] = sum(n(qd, c) for c in TEST)
        out["gallery"] = sum(n("real", c) for c in TEST)
        if gallery == "mixed":
            out["gallery"] += sum(n("real", c) - n("real", c) * 92 // 100 for c in seen_classes)
    return out


@pytest.fixture(scope="module")
def dn():
    return get_dataset("domainnet")


def test_class_lists_and_ids(dn, dn_root):
    assert (len(dn.train_classes), len(dn.val_classes), len(dn.test_classes)) == (245, 55, 45)
    assert dn.class_names == ALL and len(set(ALL)) == 345
    m = dn.build_manifest(dn_root, "ucdr", gallery="mixed")
    assert all(ALL[cid] == name for cid, name in zip(m.rows["class_id"], m.rows["class_name"]))
    q = m.role("query")
    assert set(q["class_name"]) == set(TEST) and q["class_id"].min() == 300
    assert m.meta["class_names"] == ALL


@pytest.mark.parametrize("h", ["sketch", "quickdraw"])
def test_ucdr_clean_counts(dn, dn_root, h):
    m = dn.build_manifest(dn_root, "ucdr", "clean", h)
    assert m.counts() == expected_counts(h)
    assert set(m.role("query")["domain"]) == {h} and set(m.role("gallery")["domain"]) == {"real"}
    assert h not in set(m.role("train")["domain"]) and m.meta["setting"] == f"holdout-{h}_seen-" + {
        "sketch": "quickdraw", "quickdraw": "sketch"}[h]
    # val classes never enter train; val queries are the 30 % draw with seed = val-list index
    assert not set(m.role("train")["class_name"]) & set(VAL)
    vq = m.role("val_query")
    got = sorted(vq.loc[(vq["domain"] == "clipart") & (vq["class_name"] == VAL[7]), "relpath"])
    assert got == sorted(chosen("clipart", VAL[7], 30, seed=7))


def test_row_order_is_normative(dn, dn_root):
    rows = dn.build_manifest(dn_root, "ucdr").rows
    order = [ROLES.index(r) for r in rows["role"]]
    assert order == sorted(order)
    for role in ROLES:
        part = rows[rows["role"] == role]
        keys = list(zip(part["domain"], part["class_name"], part["relpath"]))
        assert keys == sorted(keys)
    clip = rows[(rows["role"] == "train") & (rows["domain"] == "clipart")]["class_name"].tolist()
    assert clip.index("The_Eiffel_Tower") < clip.index("aircraft_carrier")  # capitals first


def test_mixed_gallery_composition(dn, dn_root):
    m = dn.build_manifest(dn_root, "ucdr", gallery="mixed")
    assert m.counts() == expected_counts("sketch", gallery="mixed")
    g, train = m.role("gallery"), set(m.role("train")["relpath"])
    assert set(g["class_name"]) == set(TEST) | set(TRAIN)
    seen_part = g[g["class_name"].isin(TRAIN)]
    assert not set(seen_part["relpath"]) & train  # the held-out 8 % is disjoint from training
    cls = TRAIN[100]
    rest = sorted(set(files_of("real", cls)) - set(chosen("real", cls, 92, seed=100)))
    assert sorted(seen_part.loc[seen_part["class_name"] == cls, "relpath"]) == rest


def test_pros_profile_uses_300_seen_classes(dn, dn_root):
    m = dn.build_manifest(dn_root, "ucdr", "paper", "sketch", gallery="mixed", paper_profile="pros")
    assert m.counts() == expected_counts("sketch", gallery="mixed", variant_clean=False,
                                         seen_classes=TRAIN + VAL, val=False)
    assert set(m.role("train")["class_name"]) == set(TRAIN) | set(VAL)
    g = m.role("gallery")
    cls = VAL[3]  # seed = 245 + 3 over train ‖ val
    rest = sorted(set(files_of("real", cls)) - set(chosen("real", cls, 92, seed=248)))
    assert sorted(g.loc[g["class_name"] == cls, "relpath"]) == rest
    assert "test" in m.meta["notes"]["selection"]


def test_merge_val_classes_trains_on_300_classes_and_keeps_the_test_roles(dn, dn_root):
    plain = dn.build_manifest(dn_root, "ucdr", "clean", "sketch", gallery="mixed")
    merged = dn.build_manifest(dn_root, "ucdr", "clean", "sketch", gallery="mixed", merge_val_classes=True)
    want = expected_counts("sketch", seen_classes=TRAIN + VAL, val=False)
    assert merged.counts()["train"] == want["train"] and merged.counts()["val_query"] == 0
    assert merged.counts()["val_gallery"] == 0  # the val split would score trained classes
    assert set(merged.role("train")["class_name"]) == set(TRAIN) | set(VAL)
    t = merged.role("train")
    cls = VAL[3]  # the real draw of a val class uses seed 245 + 3 (train ‖ val, as the pros profile)
    assert sorted(t.loc[(t["domain"] == "real") & (t["class_name"] == cls), "relpath"]) == sorted(
        chosen("real", cls, 92, seed=248))
    for role in ("query", "gallery"):  # the mixed gallery keeps the held-out 8 % of the 245 train classes
        assert list(merged.role(role)["relpath"]) == list(plain.role(role)["relpath"])
    assert merged.meta["options"]["merge_val_classes"] is True and "merge_val_classes" not in plain.meta["options"]
    assert "final weights" in merged.meta["notes"]["selection"]
    with pytest.raises(ConfigError, match="merge_val_classes must be true or false"):
        dn.build_manifest(dn_root, "ucdr", "clean", "sketch", merge_val_classes="yes")


def test_uccdr_query_domain(dn, dn_root):
    m = dn.build_manifest(dn_root, "uccdr", holdout="painting")
    assert m.counts() == expected_counts("painting", "uccdr", seen="infograph")
    assert set(m.role("query")["domain"]) == {"infograph"}
    m2 = dn.build_manifest(dn_root, "uccdr", holdout="painting", seen="clipart")
    assert set(m2.role("query")["domain"]) == {"clipart"}
    assert m2.meta["setting"] == "holdout-painting_seen-clipart"
    for bad in ("real", "painting"):
        with pytest.raises(ConfigError, match="training query domain"):
            dn.build_manifest(dn_root, "uccdr", holdout="painting", seen=bad)


@pytest.mark.parametrize("h", ["sketch", "quickdraw"])
def test_udcdr_clean_disjoint_paper_overlaps(dn, dn_root, h):
    clean = dn.build_manifest(dn_root, "udcdr", "clean", h)
    paper = dn.build_manifest(dn_root, "udcdr", "paper", h, paper_profile="ucdr_adapter")
    assert clean.counts() == expected_counts(h, "udcdr")
    assert paper.counts() == expected_counts(h, "udcdr", variant_clean=False, val=False)
    p = 10 if h == "quickdraw" else 25
    for i in (0, 18, 42, 44):
        cls = TRAIN[i]
        for m in (clean, paper):
            q, g = m.role("query"), m.role("gallery")
            assert sorted(q.loc[q["class_name"] == cls, "relpath"]) == sorted(chosen(h, cls, p, seed=i))
            assert sorted(g.loc[g["class_name"] == cls, "relpath"]) == sorted(chosen("real", cls, p, seed=i))
    assert set(clean.role("gallery")["class_name"]) <= set(TRAIN[:45])
    c_gal, c_train = set(clean.role("gallery")["relpath"]), set(clean.role("train")["relpath"])
    p_gal, p_train = set(paper.role("gallery")["relpath"]), set(paper.role("train")["relpath"])
    assert p_gal and not c_gal & c_train and clean.meta["gallery_train_overlap"] == 0
    assert p_gal <= p_train and paper.meta["gallery_train_overlap"] == len(p_gal)
    assert "disjoint" in clean.meta["notes"]["udcdr_fix"]
    assert f"{len(p_gal)} gallery images are also train" in paper.meta["notes"]["udcdr_overlap"]


def test_clean_train_set_is_shared_by_all_protocols(dn, dn_root):
    trains = [list(dn.build_manifest(dn_root, p, holdout="infograph").role("train")["relpath"])
              for p in ("ucdr", "uccdr", "udcdr")]
    assert trains[0] == trains[1] == trains[2]


def test_listing_rule_and_sidecar(dn, dn_root):
    m = dn.build_manifest(dn_root, "ucdr")
    assert "real/apple/notes.txt" in m.meta["skipped_files"] and "real/apple/.hidden.png" in m.meta["skipped_files"]
    assert m.meta["ignored_dirs"] == ["extra_domain"]
    assert "painting/t-shirt" in m.meta["empty_pairs"]
    every = sorted(f for d in DOMAINS for c in ALL for f in files_of(d, c))
    assert m.meta["listing_sha256"] == hashlib.sha256("\n".join(every).encode()).hexdigest()
    assert dn.listing_sha256(dn_root) == m.meta["listing_sha256"]
    key = f"query|sketch|{TEST[0]}"
    assert m.meta["counts_per_role_domain_class"][key] == n("sketch", TEST[0])


def test_shuffled_directory_listing_gives_byte_identical_manifest(dn, dn_root, tmp_path, shuffled_listing):
    a = write_manifest(dn.build_manifest(dn_root, "ucdr", gallery="mixed"), tmp_path / "a.csv")
    assert listing_is_shuffled(shuffled_listing, dn_root / "DomainNet" / "real" / "apple")
    b = write_manifest(dn.build_manifest(dn_root, "ucdr", gallery="mixed"), tmp_path / "b.csv")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.meta.json").read_bytes() == (tmp_path / "b.meta.json").read_bytes()


@pytest.mark.parametrize("args, match", [
    (("ucdr", "paper", "sketch"), "needs paper_profile"),
    (("ucdr", "clean", "sketch", {"paper_profile": "pros"}), "only applies to variant 'paper'"),
    (("ucdr", "paper", "sketch", {"paper_profile": "nope"}), "known DomainNet paper profiles: pros"),
    (("ucdr", "clean", "real"), "known DomainNet holdout domains: clipart, infograph, painting, quickdraw, sketch"),
    (("zsl", "clean", None), "known domainnet protocols: uccdr, ucdr, udcdr"),
    (("udcdr", "clean", None, {"gallery": "mixed"}), "takes no option 'gallery'"),
    (("ucdr", "clean", None, {"annotations": "x.txt"}), "takes no option 'annotations'"),
    (("ucdr", "clean", None, {"gallery": "all"}), "known DomainNet gallerys: mixed, unseen"),
])
def test_bad_arguments_raise_config_errors(dn, sparse_root, args, match):
    protocol, variant, holdout, *opts = args
    with pytest.raises(ConfigError, match=match):
        dn.build_manifest(sparse_root, protocol, variant, holdout, **(opts[0] if opts else {}))


def test_holdouts_are_the_five_standard_settings(dn):
    assert dn.holdouts("ucdr") == ["sketch", "quickdraw", "painting", "infograph", "clipart"]
    assert dn.default_holdout("udcdr") == "sketch"
    assert dn.inverted_domains("clean") == {"sketch", "quickdraw"}


def test_missing_root_and_domain_folder(dn, sparse_root, tmp_path):
    with pytest.raises(DataError, match=f"data root does not exist: {tmp_path / 'nope'}"):
        dn.build_manifest(tmp_path / "nope", "ucdr")
    (sparse_root / "DomainNet" / "infograph").rename(sparse_root / "DomainNet" / "infographics")
    with pytest.raises(DataError, match=f"missing domain folder {sparse_root / 'DomainNet' / 'infograph'}"):
        dn.build_manifest(sparse_root, "ucdr")


def test_split_files_cross_check(dn, sparse_root):
    dn_dir = sparse_root / "DomainNet"
    lines = [f"clipart/{c}/clipart_{ALL.index(c):03d}_{k:06d}.png {ALL.index(c)}" for c in TRAIN[:3] for k in range(4)]
    (dn_dir / "clipart_train.txt").write_text("\n".join(lines) + "\n")
    m = dn.build_manifest(sparse_root, "ucdr")
    check = m.meta["split_files"]
    assert check["files"] == ["clipart_train.txt"] and check["entries"] == len(lines)
    assert check["missing_on_disk_count"] == 0 and not check["label_conflicts"]
    (dn_dir / "clipart_test.txt").write_text(f"clipart/{TRAIN[0]}/x.png 7\nclipart/ghost_class/y.png 9\n")
    check = dn.build_manifest(sparse_root, "ucdr").meta["split_files"]
    assert check["unknown_classes"] == ["ghost_class"] and check["missing_on_disk_count"] == 2
    assert f"class '{TRAIN[0]}' labels [0, 7]" in check["label_conflicts"]


@pytest.mark.parametrize("bad", ["clipart/aircraft_carrier/a.png", "clipart/a.png 0", "clipart/x/a.png  0",
                                 "sketch/aircraft_carrier/a.png 0", "clipart/aircraft_carrier/a.png 345"])
def test_malformed_split_line_only_warns(dn, sparse_root, bad, tmp_path, caplog):
    reference = write_manifest(dn.build_manifest(sparse_root, "ucdr"), tmp_path / "ref.csv")
    path = sparse_root / "DomainNet" / "clipart_train.txt"
    path.write_text(f"clipart/{TRAIN[0]}/clipart_000_000000.png 0\n{bad}\n")
    with caplog.at_level("WARNING"):
        m = dn.build_manifest(sparse_root, "ucdr")
    assert f"{path}:2: malformed split-file line" in caplog.text
    check = m.meta["split_files"]
    assert check["entries"] == 1 and check["malformed_count"] == 1
    assert check["malformed"][0].startswith("clipart_train.txt:2: malformed split-file line")
    assert str(sparse_root) not in str(m.meta)  # the sidecar holds no machine-specific path
    assert write_manifest(m, tmp_path / "m.csv").read_bytes() == reference.read_bytes()
    assert any(w.startswith(f"{path}:2: malformed") for w in dn.verify(sparse_root, check_images=False).warnings)


def test_split_file_that_is_not_utf8_only_warns(dn, sparse_root):
    (sparse_root / "DomainNet" / "real_test.txt").write_bytes(b"real/\xff\xfe/a.png 0\n")
    check = dn.build_manifest(sparse_root, "ucdr").meta["split_files"]
    assert check["malformed_count"] == 1 and check["malformed"][0].startswith("real_test.txt: not UTF-8 text")


def test_verify_against_card_reports_count_mismatches(dn, dn_root):
    report = dn.verify(dn_root, check_images=False)
    assert not report.ok
    assert any("clipart has" in p and "expects 48129" in p for p in report.problems)
    assert any("do not have exactly 500 images" in p for p in report.problems)
    assert report.counts["images/sketch"] == sum(n("sketch", c) for c in ALL)
    assert report.counts["holdout-sketch_seen-quickdraw/ucdr/query"] == expected_counts("sketch")["query"]
    assert report.counts["holdout-quickdraw_seen-sketch/udcdr/query"] == expected_counts("quickdraw", "udcdr")["query"]
    assert report.counts["skipped_files"] == 2 and report.counts["ignored_dirs"] == 1


def test_verify_finds_bad_images(dn, sparse_root):
    folder = sparse_root / "DomainNet" / "real" / TRAIN[0]
    zero, trunc = folder / "real_000_000000.png", folder / "real_000_000001.png"
    zero.write_bytes(b"")
    trunc.write_bytes(trunc.read_bytes()[:30])
    report = dn.verify(sparse_root)
    bad = [p for p in report.problems if str(zero) in p or str(trunc) in p]
    assert len(bad) == 2 and report.counts["bad_images"] == 2
    skipped = dn.verify(sparse_root, skip_bad_images=True)
    assert skipped.counts["bad_images"] == 2 and not any(str(zero) in p for p in skipped.problems)
