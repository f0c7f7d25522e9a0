"""Every leaderboard output from the issue's hand-built records, checked value by value: long CSV, wide CSV,
per-protocol markdown, LaTeX and JSON."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.leaderboard.long import LONG_COLUMNS

CUB_HEADER = ["method", "backbone", "budget", "selection", "R@1 (%)", "R@2 (%)", "R@8 (%)", "mAP@all (0–1)",
              "MAP@R (0–1)", "note"]
CUB_ROWS = [
    ["coop", "tiny-clip", "matched:2560", "", "**52.00** ± 2.83 (2)", "**62.00** ± 2.83 (2)", "**82.00** ± 2.83 (2)",
     "**0.3100** ± 0.0141 (2)", "**0.2600** ± 0.0141 (2)", ""],
    ["coop", "tiny-clip", "steps:40", "", "45.00 ± — (1)", "55.00 ± — (1)", "75.00 ± — (1)", "0.2500 ± — (1)",
     "0.2000 ± — (1)", ""],
    ["zero_shot", "tiny-clip", "matched:2560", "", "40.00 ± — (1)", "50.00 ± — (1)", "70.00 ± — (1)",
     "0.2000 ± — (1)", "0.1500 ± — (1)", ""],
    ["zero_shot", "tiny-clip:seed=1", "matched:2560", "", "30.00 ± — (1)", "40.00 ± — (1)", "60.00 ± — (1)",
     "0.1000 ± — (1)", "0.0500 ± — (1)", ""],
    ["linear_probe", "tiny-clip", "matched:2560", "test-selected", "70.00 ± — (1)", "80.00 ± — (1)",
     "100.00 ± — (1)", "0.6000 ± — (1)", "0.5500 ± — (1)", ""],
    ["vpt", "tiny-clip", "matched:2560", "", "", "", "", "", "", "n/a (needs captions)"],
]
DOMAINNET_ROWS = [
    ["zero_shot", "**0.4600** ± 0.0141 (2)", "**0.3950** ± 0.0071 (2)", ""],
    ["↳ reported", "0.4435", "0.3840", "Paper A Table 1"],
    ["↳ Δ", "+0.0165", "+0.0110", "ours − reported"],
    ["pros [reported]", "0.6457", "", "Paper B"],
]
FDRD_HEADER = ["setting", "method", "backbone", "mean_R@1 (%)", "i2t_R@1 (%)", "i2t_R@5 (%)", "i2t_R@10 (%)",
               "t2i_R@1 (%)", "t2i_R@5 (%)", "t2i_R@10 (%)", "RSUM (sum of %)", "note"]


def _run(out, reported, *extra):
    assert main(["leaderboard", str(out), "--reported", str(reported), "--quiet", *extra]) == 0


def _md_tables(text: str) -> dict[str, list[list[str]]]:
    """Section title -> table rows (header first, the alignment row dropped), cells stripped."""
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:]
            tables[title] = []
        elif line.startswith("|") and title and not line.startswith("|:"):
            tables[title].append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return tables


def test_long_csv_holds_every_value_numerically(scenario, weights_sha):
    out, reported = scenario
    _run(out, reported, "--format", "csv")
    long = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert list(long.columns) == LONG_COLUMNS
    assert long["value"].dtype.kind == "f"
    ours, rep = long[long.source == "ours"], long[long.source == "reported"]
    assert len(ours) == 6 * 5 + 2 * 2 + 24 and len(rep) == 5
    coop = ours[(ours.method == "coop") & (ours.metric == "R@1")].sort_values(["budget", "seed"])
    assert coop[["seed", "value", "budget", "backbone", "selection"]].values.tolist() == [
        ["0", 0.5, "matched:2560", "tiny-clip", ""], ["1", 0.54, "matched:2560", "tiny-clip", ""],
        ["0", 0.45, "steps:40", "tiny-clip", ""]]  # seeds read as text: reported rows have none
    assert set(coop["backbone_sha256"]) == {weights_sha["tiny-clip"]}
    lp = ours[(ours.method == "linear_probe") & (ours.metric == "mAP@all")]
    assert lp[["value", "selection"]].values.tolist() == [[0.6, "test-selected"]]
    zs = ours[(ours.method == "zero_shot") & (ours.dataset == "domainnet") & (ours.metric == "mAP@200")]
    assert zs[["seed", "value", "backbone", "variant", "budget"]].values.tolist() == [
        ["0", 0.45, "ViT-B/32", "paper", "paper"], ["1", 0.47, "ViT-B/32", "paper", "paper"]]
    fd = ours[(ours.method == "dcar") & (ours.metric == "oxford_pets/RSUM")]
    assert fd["value"].tolist() == [310.0]
    prec = rep[(rep.method == "zero_shot") & (rep.metric == "Prec@200")].iloc[0]
    assert (prec["value"], prec["seed"], prec["reference"]) == (0.384, "", "Paper A Table 1")  # 38.40 % as stored


def test_wide_csv_is_numeric_with_one_row_per_identity(scenario):
    out, reported = scenario
    _run(out, reported, "--format", "csv")
    wide = pd.read_csv(out / "leaderboard_wide.csv", keep_default_na=False, na_values=[""])
    for col in ("R@1", "R@1 std", "mAP@200 reported", "mAP@200 delta", "RSUM"):
        assert wide[col].dtype.kind == "f", col
    assert "i2t_R@1 delta" not in wide.columns  # no published image-text number matched one of ours
    cub = wide[wide.dataset == "cub"].set_index(["method", "backbone", "budget"])
    assert len(cub) == 6
    assert cub.loc[("coop", "tiny-clip", "matched:2560"), ["R@1", "R@1 std", "R@1 n"]].tolist() == pytest.approx(
        [0.52, 0.028284, 2])
    one = cub.loc[("zero_shot", "tiny-clip:seed=1", "matched:2560")]
    assert (one["R@1"], one["R@1 n"], math.isnan(one["R@1 std"])) == (0.3, 1, True)
    assert cub.loc[("zero_shot", "tiny-clip", "matched:2560"), "R@1 n"] == 1
    assert cub.loc[("linear_probe", "tiny-clip", "matched:2560"), "selection"] == "test-selected"
    assert cub.loc[("vpt", "tiny-clip", "matched:2560"), "note"] == "n/a (needs captions)"
    dn = wide[wide.dataset == "domainnet"].set_index("method")
    zs = dn.loc["zero_shot"]
    assert [zs["mAP@200"], zs["mAP@200 n"], zs["mAP@200 reported"], zs["mAP@200 delta"]] == pytest.approx(
        [0.46, 2, 0.4435, 0.0165])
    assert [zs["Prec@200 reported"], zs["Prec@200 delta"]] == pytest.approx([0.384, 0.011])
    assert (dn.loc["pros", "source"], dn.loc["pros", "mAP@200"], math.isnan(dn.loc["pros", "mAP@200 delta"])) == (
        "reported", 0.6457, True)
    fd = wide[wide.dataset == "fdrd"].set_index(["method", "query_domain"])
    assert fd.loc[("dcar", "average2"), ["RSUM", "i2t_R@5", "mean_R@1"]].tolist() == [250.0, 50.0, 25.0]
    maple = fd.loc[("maple", "average9")]
    assert (maple["source"], maple["implemented"], maple["i2t_R@1"], maple["backbone"]) == (
        "reported", False, 35.42, "ViT-B/32")
    assert fd.loc[("dcar", "oxford_pets")]["source"].tolist() == ["ours", "reported"]


def test_markdown_has_one_table_per_protocol(scenario):
    out, reported = scenario
    _run(out, reported, "--format", "md")
    tables = _md_tables((out / "leaderboard.md").read_text())
    assert list(tables) == ["cub / fgir_open", "domainnet / ucdr", "fdrd / itr"]
    assert tables["cub / fgir_open"] == [CUB_HEADER, *CUB_ROWS]
    assert tables["domainnet / ucdr"] == [["method", "mAP@200 (0–1)", "Prec@200 (0–1)", "note"], *DOMAINNET_ROWS]
    fdrd = tables["fdrd / itr"]
    assert fdrd[0] == FDRD_HEADER
    assert [r[:3] for r in fdrd[1:]] == [
        ["clean · oxford_flowers", "dcar", "tiny-clip"], ["clean · oxford_pets", "dcar", "tiny-clip"],
        ["clean · average2", "dcar", "tiny-clip"], ["paper · oxford_pets", "dcar [reported]", "ViT-B/32"],
        ["paper · average9", "maple [reported; not implemented here]", "ViT-B/32"]]
    assert fdrd[3][3:] == ["**25.00** ± — (1)", "**30.00** ± — (1)", "**50.00** ± — (1)", "**60.00** ± — (1)",
                           "**20.00** ± — (1)", "**40.00** ± — (1)", "**50.00** ± — (1)", "**250.00** ± — (1)", ""]
    assert fdrd[5][3:] == ["", "35.42", "", "", "", "", "", "", "Paper C"]
    text = (out / "leaderboard.md").read_text()
    assert "Setting: paper · sketch → unseen. Backbone: ViT-B/32. Budget: paper." in text
    assert "tagged rows are not ranked: test-selected ones chose their model on the test split" in text


def test_latex_has_one_table_per_protocol_with_the_best_in_bold(scenario):
    out, reported = scenario
    _run(out, reported, "--format", "latex")
    assert not (out / "leaderboard.md").exists() and not (out / "leaderboard.csv").exists()
    tex = (out / "leaderboard.tex").read_text()
    blocks = tex.split(r"\begin{table}")[1:]
    assert len(blocks) == 3 and tex.count(r"\end{table}") == 3
    cub, dn, fdrd = blocks
    assert r"\label{tab:xbench-cub-fgir-open}" in cub and r"\begin{tabular}{llllrrrrrl}" in cub
    assert ("coop & tiny-clip & matched:2560 &  & \\textbf{52.00} $\\pm$ 2.83 (2) & \\textbf{62.00} $\\pm$ 2.83 (2) & "
            "\\textbf{82.00} $\\pm$ 2.83 (2) & \\textbf{0.3100} $\\pm$ 0.0141 (2) & \\textbf{0.2600} $\\pm$ 0.0141 (2) &  "
            "\\\\") in cub.splitlines()
    assert ("linear\\_probe & tiny-clip & matched:2560 & test-selected & 70.00 $\\pm$ --- (1) & 80.00 $\\pm$ --- (1) & "
            "100.00 $\\pm$ --- (1) & 0.6000 $\\pm$ --- (1) & 0.5500 $\\pm$ --- (1) &  \\\\") in cub.splitlines()
    assert cub.count(r"\textbf{") == 5  # one per column
    assert "mAP@all (0--1) & MAP@R (0--1) & note \\\\" in cub
    assert "$\\hookrightarrow$ $\\Delta$ & +0.0165 & +0.0110 & ours $-$ reported \\\\" in dn.splitlines()
    assert dn.count(r"\textbf{") == 2
    assert fdrd.count(r"\textbf{") == 3 * 8 and fdrd.count(r"\midrule") == 1 + 4  # header rule + between settings
    assert "maple [reported; not implemented here] & ViT-B/32 &  & 35.42 &" in fdrd


def test_json_mirrors_the_tables_on_the_papers_scale(scenario):
    out, reported = scenario
    _run(out, reported, "--format", "json")
    doc = json.loads((out / "leaderboard.json").read_text())
    assert doc["records"] == 10 and [t["protocol"] for t in doc["tables"]] == ["fgir_open", "ucdr", "itr"]
    cub = doc["tables"][0]
    assert [m["name"] for m in cub["metrics"]] == ["R@1", "R@2", "R@8", "mAP@all", "MAP@R"]
    assert [(m["unit"], m["primary"]) for m in cub["metrics"][:2]] == [("%", True), ("%", False)]
    rows = {(r["method"], r["backbone"], r["budget"]): r for r in cub["rows"]}
    r1 = rows[("coop", "tiny-clip", "matched:2560")]["values"]["R@1"]
    assert (r1["mean"], r1["std"], r1["n"], r1["best"], r1["text"]) == (
        pytest.approx(52.0), pytest.approx(2.828427), 2, True, "52.00 ± 2.83 (2)")
    single = rows[("zero_shot", "tiny-clip:seed=1", "matched:2560")]["values"]["mAP@all"]
    assert (single["mean"], single["std"], single["n"], single["best"]) == (pytest.approx(0.1), None, 1, False)
    lp = rows[("linear_probe", "tiny-clip", "matched:2560")]
    assert lp["selection"] == "test-selected" and not any(v["best"] for v in lp["values"].values())
    assert rows[("vpt", "tiny-clip", "matched:2560")]["notes"] == ["n/a (needs captions)"]
    dn = doc["tables"][1]["rows"]
    assert dn[0]["values"]["mAP@200"]["reported"] == pytest.approx(0.4435)
    assert dn[0]["values"]["mAP@200"]["delta"] == pytest.approx(0.0165)
    assert (dn[1]["kind"], dn[1]["method"], dn[1]["values"]["mAP@200"]["n"]) == ("reported", "pros", None)
    fd = doc["tables"][2]
    assert [m["name"] for m in fd["metrics"]] == ["mean_R@1", "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1",
                                                  "t2i_R@5", "t2i_R@10", "RSUM"]
    maple = fd["rows"][-1]
    assert (maple["label"], maple["implemented"], maple["values"]["i2t_R@1"]["mean"]) == (
        "maple [reported; not implemented here]", False, pytest.approx(35.42))


def test_written_files_follow_the_umask(scenario, monkeypatch):
    import os

    out, reported = scenario
    old = os.umask(0o022)
    try:
        _run(out, reported)
    finally:
        os.umask(old)
    names = ["leaderboard.csv", "leaderboard_wide.csv", "leaderboard.md", "leaderboard.tex", "leaderboard.json"]
    assert {n: oct((out / n).stat().st_mode & 0o777) for n in names} == {n: "0o644" for n in names}
