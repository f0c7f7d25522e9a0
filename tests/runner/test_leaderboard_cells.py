"""Leaderboard from a real 2-seed suite run: mean, std and n against numpy, a reported number under another
backbone beside ours without a delta, and failed / missing / n/a cells shown with their reason, never silently
absent."""

from __future__ import annotations

import csv
import json
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.paths import project_root

SUITE = """
name: leaderboard-cells
seeds: [0, 1]
budget: steps:2
methods: [zero_shot, pros, linear_probe, needs_captions]
datasets:
  sketchy:
    protocols:
      uccdr_eccv21: {}
overrides:
  - where: {method: pros}
    method: {phases: {stage1: {batch_size: 8}, stage2: {batch_size: 8}}}
  - where: {method: linear_probe}
    method: {batch_size: 8}
  - where: {method: linear_probe, seed: 1}
    data: {max_train_samples: 0}  # forced failure of one seed, at run time (configs are checked at load)
"""


@pytest.fixture(scope="module")
def needs_captions(tmp_path_factory):
    """A test-local method that declares it cannot run protocols without captions (n/a)."""
    from xdomain_bench.methods.base import METHODS, get_method_class, register_method

    class NeedsCaptions(get_method_class("zero_shot")):
        @classmethod
        def unsupported_reason(cls, info):
            return None if info.has_captions else f"needs captions; {info.dataset}/{info.protocol} has none"

    register_method("needs_captions")(NeedsCaptions)
    cards = tmp_path_factory.mktemp("cards")
    for card in (project_root() / "methods").glob("*.yaml"):
        shutil.copy(card, cards)
    shutil.copy(cards / "zero_shot.yaml", cards / "needs_captions.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("xdomain_bench.methods.config.method_cards_dir", lambda: cards)
        yield "needs_captions"
    METHODS._items.pop("needs_captions")


@pytest.fixture(scope="module")
def run(synth_all, tmp_path_factory, needs_captions):
    out = tmp_path_factory.mktemp("lb_run")
    suite = out / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    rc = main(["run", "--suite", str(suite), "--data-root", str(synth_all), "--out", str(out), "--no-progress"])
    assert rc == 1  # one cell failed: the suite says so, but it went on
    recs = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    for rec in recs:
        if rec["method"] == "zero_shot":  # cells the suite asked for that never wrote a record
            (out / "records" / f"{_slug(rec)}.json").unlink()
    assert main(["leaderboard", str(out), "--quiet"]) == 0
    wide = pd.read_csv(out / "leaderboard_wide.csv", keep_default_na=False, na_values=[""]).fillna({"note": ""})
    return out, recs, wide[wide.source == "ours"].set_index("method")


def _slug(rec: dict) -> str:
    from xdomain_bench.runner.records import Cell

    return Cell(**rec["cell"]).slug()


def _by(recs, method: str) -> list[dict]:
    return sorted((r for r in recs if r["method"] == method), key=lambda r: r["seed"])


def test_mean_std_over_two_seeds_matches_numpy(run):
    _, recs, wide = run
    pros = _by(recs, "pros")
    assert [r["status"] for r in pros] == ["ok", "ok"]
    assert pros[0]["metrics"]["mAP@200"] != pros[1]["metrics"]["mAP@200"]  # so the std is a real check
    for metric in ("mAP@200", "Prec@200", "mAP@all", "Prec@100"):
        vals = np.array([r["metrics"][metric] for r in pros])
        assert wide.loc["pros", [metric, f"{metric} std", f"{metric} n"]].tolist() == pytest.approx(
            [vals.mean(), np.std(vals, ddof=1), 2], abs=1e-6)


def test_reported_number_under_another_backbone_has_no_delta(run):
    out, recs, wide = run
    with open(project_root() / "benchmarks" / "reported.csv", newline="") as f:
        reported = next(float(r["value"]) for r in csv.DictReader(f) if (r["method"], r["dataset"], r["metric"])
                        == ("pros", "sketchy", "mAP@200"))
    mean = np.mean([r["metrics"]["mAP@200"] for r in _by(recs, "pros")])
    # published under ViT-B/32 and the paper variant: beside ours in a row of its own, never as a delta
    full = pd.read_csv(out / "leaderboard_wide.csv")
    rep = full[(full.method == "pros") & (full.source == "reported")]
    assert rep[["variant", "query_domain", "gallery", "backbone", "mAP@200"]].values.tolist() == [
        ["paper", "sketch", "photo", "ViT-B/32", reported]]
    assert wide.loc["pros", "mAP@200"] == pytest.approx(mean, abs=1e-6) and "mAP@200 delta" not in full.columns


def test_failed_seed_is_shown_beside_the_finished_one(run):
    _, recs, wide = run
    ok, failed = _by(recs, "linear_probe")
    assert ok["status"] == "ok" and failed["status"] == "failed"
    assert failed["error"].startswith("max_train_samples must be >= 1, got 0")
    v = ok["metrics"]["mAP@200"]
    assert wide.loc["linear_probe", ["mAP@200", "mAP@200 n"]].tolist() == pytest.approx([v, 1], abs=1e-6)
    text = wide.loc["linear_probe", "note"]
    assert text.startswith("failed (max_train_samples must be >= 1")


def test_na_cell_shows_its_reason(run):
    out, recs, wide = run
    na = _by(recs, "needs_captions")
    assert [r["status"] for r in na] == ["n/a", "n/a"]
    assert all("metrics" not in r and r["reason"] == "needs captions; sketchy/uccdr_eccv21 has none" for r in na)
    assert not list((out / "checkpoints").glob("needs_captions*"))
    assert wide.loc["needs_captions", "note"] == "n/a (needs captions; sketchy/uccdr_eccv21 has none)"


def test_missing_cell_is_listed(run):
    out, recs, wide = run
    expected = json.loads((out / "expected_cells.json").read_text())
    assert len(expected) == 8 and len(list((out / "records").glob("*.json"))) == 6
    assert wide.loc["zero_shot", "note"] == "missing"
    md = (out / "leaderboard.md").read_text()
    for needle in ("missing", "n/a (needs captions", "failed (max_train_samples must be >= 1"):
        assert needle in md


def test_single_cell_n_a_says_why(needs_captions, synth_all, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one unwrapped line
    rc = main(["run", "--method", needs_captions, "--dataset", "cub", "--data-root", str(synth_all),
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0 and "n/a needs captions; cub/fgir_open has none" in capsys.readouterr().out
    (path,) = (tmp_path / "records").glob("*.json")
    assert json.loads(path.read_text())["status"] == "n/a"
