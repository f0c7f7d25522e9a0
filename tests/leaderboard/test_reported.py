"""Published numbers join our rows only on an exact match (dataset, protocol, variant, setting, metric,
backbone); the demo (demo-clip) never shows a delta against a ViT-B/32 number."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.leaderboard.cli import leaderboard_command

HEADER = "method,dataset,protocol,query_domain,gallery,metric,value,backbone,source\n"
B32 = "hf-clip:openai/clip-vit-base-patch32"
DOMAINS = ["sketch", "quickdraw", "painting", "infograph", "clipart"]


def _wide(out) -> pd.DataFrame:
    wide = pd.read_csv(out / "leaderboard_wide.csv", keep_default_na=False, na_values=[""])
    return wide.fillna({"selection": "", "note": "", "reference": ""})


def _demo_like_records(out, make_record) -> None:
    dn = {"dataset": "domainnet", "protocol": "ucdr", "holdout": "sketch", "query_domain": "sketch",
          "backbone": "demo-clip", "budget": "matched:1280", "sha256": "ab" * 32}
    for seed, value in ((0, 0.05), (1, 0.06)):
        make_record(out, method="pros", **dn, gallery="unseen", seed=seed, metrics={"mAP@200": value})
        make_record(out, method="zero_shot", **dn, gallery="mixed", seed=seed, metrics={"mAP@200": value / 2})
    make_record(out, method="pros", **{**dn, "variant": "paper"}, gallery="unseen", metrics={"mAP@200": 0.07})
    make_record(out, method="dcar", dataset="fdrd", protocol="itr", backbone="demo-clip", sha256="ab" * 32,
                budget="matched:1280", metrics={"i2t_R@1": 20.0, "oxford_pets/i2t_R@1": 25.0})


def test_demo_leaderboard_shows_no_delta_against_vit_b32(tmp_path, make_record):
    _demo_like_records(tmp_path, make_record)
    assert main(["leaderboard", str(tmp_path), "--quiet"]) == 0  # the repository's reported numbers
    wide = _wide(tmp_path)
    assert not [c for c in wide.columns if c.endswith((" delta", " reported"))]
    reported = wide[wide.source == "reported"]
    assert set(reported["backbone"]) == {"ViT-B/32"} and "pros" in set(reported["method"])
    assert set(wide.loc[wide.source == "ours", "backbone"]) == {"demo-clip"}
    assert "↳ Δ" not in (tmp_path / "leaderboard.md").read_text()
    assert "Δ" not in (tmp_path / "leaderboard.tex").read_text()
    doc = json.loads((tmp_path / "leaderboard.json").read_text())
    assert not [v for t in doc["tables"] for r in t["rows"] for v in r["values"].values() if "delta" in v]


def test_the_demos_call_writes_per_protocol_tables(tmp_path, make_record, capsys):
    """runner/demo.py calls the command with a bare Namespace (no --format, no --width)."""
    _demo_like_records(tmp_path, make_record)
    assert leaderboard_command(argparse.Namespace(dir=str(tmp_path), quiet=False, no_reported=True,
                                                  reported=None)) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")] == ["## domainnet / ucdr", "## fdrd / itr"]
    assert max(line.count(" | ") + 1 for line in md.splitlines() if line.startswith("| ")) <= 12
    printed = capsys.readouterr().out
    assert "domainnet / ucdr" in printed and "mAP@200 (0–1)" in printed and "[reported]" not in printed


def test_a_clean_row_does_not_join_a_paper_number(tmp_path, make_record):
    reported = tmp_path / "reported.csv"
    reported.write_text(HEADER + "zero_shot,domainnet,ucdr,sketch,unseen,mAP@200,0.4435,ViT-B/32,Paper A\n")
    make_record(tmp_path / "run", method="zero_shot", dataset="domainnet", protocol="ucdr", variant="clean",
                holdout="sketch", gallery="unseen", query_domain="sketch", backbone=B32, metrics={"mAP@200": 0.45})
    assert main(["leaderboard", str(tmp_path / "run"), "--quiet", "--reported", str(reported)]) == 0
    wide = _wide(tmp_path / "run")
    assert wide[["variant", "source", "mAP@200"]].values.tolist() == [["clean", "ours", 0.45],
                                                                      ["paper", "reported", 0.4435]]
    assert "mAP@200 delta" not in wide.columns


@pytest.mark.parametrize("domains,label,joined", [(DOMAINS, "average", True),
                                                   (DOMAINS[:2], "average(2 of 5)", False)])
def test_a_domain_average_joins_the_papers_average_only_when_complete(tmp_path, make_record, domains, label, joined):
    reported = tmp_path / "reported.csv"
    reported.write_text(HEADER + "pros,domainnet,ucdr,average,unseen,mAP@200,0.6052,ViT-B/32,Paper A\n")
    run = tmp_path / "run"
    for i, domain in enumerate(domains):
        make_record(run, method="pros", dataset="domainnet", protocol="ucdr", variant="paper", holdout=domain,
                    gallery="unseen", query_domain=domain, backbone=B32, budget="paper",
                    metrics={"mAP@200": 0.5 + 0.1 * i})
    assert main(["leaderboard", str(run), "--quiet", "--reported", str(reported)]) == 0
    wide = _wide(run)
    avg = wide[(wide.source == "ours") & wide.query_domain.str.startswith("average")]
    assert avg[["query_domain", "mAP@200", "mAP@200 n"]].values.tolist() == [
        [label, pytest.approx(0.5 + 0.05 * (len(domains) - 1)), 1]]
    if joined:
        assert avg["mAP@200 delta"].item() == pytest.approx(0.7 - 0.6052)
    else:
        assert "mAP@200 delta" not in wide.columns
        assert wide.loc[wide.source == "reported", "query_domain"].tolist() == ["average"]


@pytest.mark.parametrize("text,needle", [
    ("method,dataset,metric,value\npros,domainnet,mAP@200,0.6\n", "lacks columns ['protocol', 'query_domain'"),
    (HEADER + "pros,domainnet,ucdr,average,unseen,mAP@200,sixty,ViT-B/32,P\n",
     "line 2: value 'sixty' is not a number"),
])
def test_a_malformed_reported_file_is_one_clear_error(tmp_path, make_record, capsys, text, needle):
    make_record(tmp_path / "run", method="zero_shot", dataset="cub", protocol="fgir_open", metrics={"R@1": 0.4})
    reported = tmp_path / "reported.csv"
    reported.write_text(text)
    assert main(["leaderboard", str(tmp_path / "run"), "--quiet", "--reported", str(reported)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xbench: error: {reported}") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "leaderboard.csv").exists()
