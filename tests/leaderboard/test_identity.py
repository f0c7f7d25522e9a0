"""Row identity: rows that differ in backbone (by weights), budget or selection tag are never averaged; the
same weights under two spellings are one backbone; two records of one row and seed are refused."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.leaderboard import identity
from xdomain_bench.runner.records import Cell, row_identity

CUB = {"dataset": "cub", "protocol": "fgir_open"}


def _wide(out, *extra) -> pd.DataFrame:
    assert main(["leaderboard", str(out), "--quiet", "--no-reported", "--format", "csv", *extra]) == 0
    wide = pd.read_csv(out / "leaderboard_wide.csv", keep_default_na=False, na_values=[""])
    return wide.fillna({"selection": "", "note": "", "reference": ""})


def test_two_backbones_of_one_cell_are_two_rows_of_one_seed(tmp_path, make_record):
    make_record(tmp_path, method="zero_shot", **CUB, backbone="tiny-clip", metrics={"R@1": 0.4})
    make_record(tmp_path, method="zero_shot", **CUB, backbone="tiny-clip:seed=1", metrics={"R@1": 0.2})
    wide = _wide(tmp_path)
    assert wide[["backbone", "R@1", "R@1 n"]].values.tolist() == [["tiny-clip", 0.4, 1], ["tiny-clip:seed=1", 0.2, 1]]


def test_budgets_and_selection_tags_are_never_averaged(tmp_path, make_record):
    make_record(tmp_path, method="coop", **CUB, seed=0, budget="matched:2560", metrics={"R@1": 0.5})
    make_record(tmp_path, method="coop", **CUB, seed=1, budget="matched:2560", metrics={"R@1": 0.7})
    make_record(tmp_path, method="coop", **CUB, seed=0, budget="steps:40", metrics={"R@1": 0.3})
    make_record(tmp_path, method="coop", **CUB, seed=2, budget="matched:2560", selection="test-selected",
                metrics={"R@1": 0.9})
    make_record(tmp_path, method="coop", **CUB, seed=3, budget=None, metrics={"R@1": 0.1})  # an older record
    wide = _wide(tmp_path).sort_values(["budget", "selection"])
    assert wide[["budget", "selection", "R@1", "R@1 n"]].values.tolist() == [
        ["matched:2560", "", 0.6, 2], ["matched:2560", "test-selected", 0.9, 1], ["steps:40", "", 0.3, 1],
        ["unstated", "", 0.1, 1]]


def test_the_same_weights_under_two_names_are_one_backbone(tmp_path, make_record):
    sha = hashlib.sha256(b"some weights").hexdigest()
    make_record(tmp_path, method="zero_shot", **CUB, seed=0, backbone="hf-clip:/models/a", sha256=sha,
                metrics={"R@1": 0.4})
    make_record(tmp_path, method="zero_shot", **CUB, seed=1, backbone="hf-clip:/mnt/copy-of-a", sha256=sha,
                metrics={"R@1": 0.6})
    wide = _wide(tmp_path)
    assert wide[["backbone", "R@1", "R@1 n"]].values.tolist() == [["hf-clip:/models/a", 0.5, 2]]


def test_one_name_with_two_weights_is_two_backbones(tmp_path, make_record):
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    make_record(tmp_path, method="zero_shot", **CUB, seed=0, backbone="hf-clip:/models/x", sha256=a,
                metrics={"R@1": 0.4})
    make_record(tmp_path, method="zero_shot", **CUB, seed=1, backbone="hf-clip:/models/x", sha256=b,
                metrics={"R@1": 0.6})
    wide = _wide(tmp_path)
    assert set(wide["backbone"]) == {f"hf-clip:/models/x#{a[:8]}", f"hf-clip:/models/x#{b[:8]}"}
    assert wide["R@1 n"].tolist() == [1, 1]


def test_one_seed_recorded_under_two_spellings_is_refused(tmp_path, make_record, capsys):
    sha = hashlib.sha256(b"tiny").hexdigest()
    make_record(tmp_path, method="zero_shot", **CUB, backbone="tiny-clip", sha256=sha, metrics={"R@1": 0.4})
    make_record(tmp_path, method="zero_shot", **CUB, backbone="tiny-clip:seed=0", sha256=sha, metrics={"R@1": 0.4})
    assert main(["leaderboard", str(tmp_path), "--quiet", "--no-reported"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xbench: error: two records give the leaderboard row zero_shot · cub · fgir_open")
    assert "(seed 0) twice (the same settings, the backbone named two ways)" in err
    assert not (tmp_path / "leaderboard.csv").exists()


def test_a_local_copy_of_a_known_checkpoint_is_known_by_its_hash(tmp_path, make_record, monkeypatch):
    sha = hashlib.sha256(b"openai b32 safetensors").hexdigest()
    assert identity.canonical_backbone("hf-clip:/models/clip-vit-base-patch32", sha) is None  # a folder name proves nothing
    monkeypatch.setitem(identity._BY_SHA, sha, "ViT-B/32")
    make_record(tmp_path, method="zero_shot", dataset="domainnet", protocol="ucdr", variant="paper", holdout="sketch",
                gallery="unseen", query_domain="sketch", backbone="hf-clip:/models/b32", sha256=sha,
                metrics={"mAP@200": 0.45})
    reported = tmp_path / "reported.csv"
    reported.write_text("method,dataset,protocol,query_domain,gallery,metric,value,backbone,source\n"
                        "zero_shot,domainnet,ucdr,sketch,unseen,mAP@200,0.4435,ViT-B/32,Paper A\n")
    assert main(["leaderboard", str(tmp_path), "--quiet", "--reported", str(reported), "--format", "csv"]) == 0
    wide = pd.read_csv(tmp_path / "leaderboard_wide.csv", keep_default_na=False, na_values=[""])
    assert wide[["backbone", "mAP@200", "mAP@200 reported"]].values.tolist() == [["ViT-B/32", 0.45, 0.4435]]
    assert round(wide["mAP@200 delta"].item(), 6) == 0.0065


def test_row_identity_of_a_cell_alone(make_record, tmp_path):
    """What the demo compares before any record exists: the spec, with known hub ids under one name."""
    cell = Cell(method="pros", dataset="domainnet", protocol="ucdr", holdout="sketch",
                backbone="hf-clip:openai/clip-vit-base-patch32", budget="matched:1280",
                data_options={"gallery": "unseen"})
    assert row_identity(cell.to_dict()) == ("pros", "domainnet", "ucdr", "clean", "sketch", "unseen", "ViT-B/32",
                                            "matched:1280", "", 0)
    rec = make_record(tmp_path, method="pros", dataset="cub", protocol="fgir_open", selection="test-selected",
                      metrics={"R@1": 0.1})
    assert row_identity(rec["cell"], rec)[6:] == (f"sha256:{rec['backbone']['weights_sha256']}", "matched:2560",
                                                  "test-selected", 0)


def test_nonstandard_data_is_tagged_kept_apart_and_never_ranked(tmp_path, make_record):
    """A run that went on with missing classes (allow_missing_classes) or skipped images is its own row,
    tagged nonstandard, never averaged with the standard seeds and never bold."""
    import json

    from xdomain_bench.cli import main

    for seed, r1 in ((0, 0.40), (1, 0.50)):
        make_record(tmp_path, method="coop", **CUB, seed=seed, metrics={"R@1": r1, "mAP@all": 0.3})
    rec = make_record(tmp_path, method="coop", **CUB, seed=2, metrics={"R@1": 0.99, "mAP@all": 0.9})
    (path,) = [p for p in (tmp_path / "records").glob("*.json") if json.loads(p.read_text())["seed"] == 2]
    rec = json.loads(path.read_text())
    rec["notes"] = {"nonstandard": True, "missing_parts": ["class 007.Parakeet_Auklet"]}
    path.write_text(json.dumps(rec))
    assert main(["leaderboard", str(tmp_path), "--quiet", "--format", "csv,json"]) == 0
    long = pd.read_csv(tmp_path / "leaderboard.csv", keep_default_na=False)
    coop = long[(long["method"] == "coop") & (long["metric"] == "R@1")]
    assert sorted(zip(coop["seed"], coop["selection"])) == [(0, ""), (1, ""), (2, "nonstandard")]
    wide = pd.read_csv(tmp_path / "leaderboard_wide.csv", keep_default_na=False)
    rows = wide[wide["method"] == "coop"].set_index("selection")
    assert rows.loc["", "R@1"] == pytest.approx(0.45) and rows.loc["", "R@1 n"] == 2
    assert rows.loc["nonstandard", "R@1 n"] == 1
    tables = json.loads((tmp_path / "leaderboard.json").read_text())
    (table,) = [t for t in tables["tables"] if t["dataset"] == "cub"]
    tagged = [r for r in table["rows"] if r["selection"] == "nonstandard"]
    assert tagged and not any(v["best"] for v in tagged[0]["values"].values())
