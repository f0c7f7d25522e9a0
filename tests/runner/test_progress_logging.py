"""Progress, quiet mode and training logs: one bar per cell over every phase's global steps, Lightning's CSV
logger under OUT/logs/<cell>/ with the loss terms, learning rate and selection metric, a missing optional
logger named by its extra, and --quiet printing only results and errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from xdomain_bench.cli import main
from xdomain_bench.progress import QUIET_ENV, Bar
from xdomain_bench.runner.records import Cell

# Two phases (UCDR-Adapter: 1 + 5 steps at steps:6), the second validated after every step.
CELL = Cell(method="ucdr_adapter", dataset="cub", protocol="fgir_open", backbone="tiny-clip", budget="steps:6")


@pytest.fixture(scope="module")
def logged_run(synth_all, tmp_path_factory):
    """The two-phase cell run with its bar shown and the CSV logger, every bar update recorded."""
    from xdomain_bench.runner.execute import run_cell

    out = tmp_path_factory.mktemp("logged_run")
    updates: list[tuple[str, str | None, float | None]] = []  # (kind, description, position)
    original = Bar.update

    def spy(self, completed=None, **kw):
        if self.enabled:
            kind = "phase" if kw.get("description") else "step" if kw.get("info") is not None else "end"
            updates.append((kind, kw.get("description"), completed))
        return original(self, completed, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(QUIET_ENV, "0")
        mp.setattr(Bar, "update", spy)
        rec = run_cell(CELL, synth_all, out, progress=True, logger="csv", raise_errors=True)
    return rec, out, updates


def test_cell_bar_counts_global_steps_over_phases(logged_run):
    rec, _, updates = logged_run
    assert rec["status"] == "ok"
    planned = [int(p["steps"]) for p in rec["budget"]["phases"]]
    assert len(planned) == 2 and sum(planned) == 6
    trained = [p["steps"] for p in rec["training"]["phases"]]  # phase 2 may stop early (card's patience)
    assert trained[0] == planned[0] and 1 <= trained[1] <= planned[1]
    positions = [c for _, _, c in updates]
    assert positions == sorted(positions)  # one bar: phase 2 goes on from phase 1's end, never back to 0
    expected = [*range(1, trained[0] + 1), *range(planned[0] + 1, planned[0] + trained[1] + 1)]
    assert [c for k, _, c in updates if k == "step"] == expected  # one update per global step trained
    assert [c for k, _, c in updates if k == "end"] == [planned[0], sum(planned)]
    assert [(d.rsplit(" · ", 1)[-1], c) for k, d, c in updates if k == "phase"] == [("phase1", 0),
                                                                                    ("phase2", planned[0])]


def test_csv_logs_in_lightning_layout(logged_run, synth_all):
    from xdomain_bench.methods.config import resolve_config

    rec, out, _ = logged_run
    folder = out / "logs" / CELL.slug()
    assert rec["logs"] == {"kind": "csv", "dir": f"logs/{CELL.slug()}",
                           "files": ["phase1/version_0/metrics.csv", "phase2/version_0/metrics.csv"]}
    cfg = resolve_config("ucdr_adapter", None, "cub", [])
    for phase, steps in zip(("phase1", "phase2"), [p["steps"] for p in rec["training"]["phases"]]):
        with (folder / phase / "version_0" / "metrics.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        losses = [r for r in rows if r.get("train_loss")]
        assert [int(r["step"]) for r in losses] == list(range(steps))  # every step logs its loss
        lr_key = next(k for k in rows[0] if k.startswith("lr-"))
        lrs = [float(r[lr_key]) for r in rows if r[lr_key]]
        assert len(lrs) == steps and lrs[0] == pytest.approx(cfg["phases"][phase]["optimizer"]["lr"])
        terms = {k for k in rows[0] if k.startswith("train_") and k != "train_loss"}
        assert terms, "the method's loss terms are logged beside the total"
    with (folder / "phase2" / "version_0" / "metrics.csv").open() as fh:
        vals = [float(r["val_selection"]) for r in csv.DictReader(fh) if r.get("val_selection")]
    assert len(vals) == rec["training"]["phases"][1]["steps"] and rec["training"]["phases"][1]["selected"]["value"] == pytest.approx(max(vals))


@pytest.mark.parametrize("kind,extra", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_missing_logger_extra_is_one_line(kind, extra, synth_all, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "wandb") else real(name, *a))
    out = tmp_path / "out"
    rc = main(["run", "--method", "zero_shot", "--dataset", "cub", "--data-root", str(synth_all), "--out", str(out),
               "--logger", kind])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"xbench: error: --logger {kind} needs the '{extra}' extra")
    assert f"pip install 'xdomain_bench[{extra}]'" in err
    assert not out.exists()  # validated before any work


def test_unknown_logger(synth_all, tmp_path, capsys):
    rc = main(["run", "--method", "zero_shot", "--dataset", "cub", "--data-root", str(synth_all),
               "--out", str(tmp_path / "o"), "--logger", "mlflow"])
    assert rc == 2 and capsys.readouterr().err.startswith("xbench: error: unknown --logger 'mlflow'")


def test_quiet_prints_results_and_errors_only(synth_all, tmp_path, monkeypatch, capfd):
    """A two-cell suite, one cell training: stdout holds one line per cell and the summary; nothing else, on
    either stream (no banners, tips, bars or progress lines)."""
    monkeypatch.setenv(QUIET_ENV, "0")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nseeds: [0]\nbudget: {policy: steps, steps: 2}\nmethods: [zero_shot, linear_probe]\n"
                     "variants: [clean]\ndatasets:\n  cub:\n    protocols:\n      fgir_open: {}\n")
    out = tmp_path / "out"
    rc = main(["run", "--suite", str(suite), "--data-root", str(synth_all), "--backbone", "tiny-clip",
               "--out", str(out), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0 and captured.err == ""
    lines = [ln for ln in captured.out.splitlines() if ln.strip()]
    assert len(lines) == 3, captured.out
    assert lines[0].startswith("[1/2] ") and lines[1].startswith("[2/2] ") and ": ok in " in lines[1]
    assert lines[2].startswith("suite: 2 ran, 0 already done, 0 failed")
    assert len(list((out / "logs").glob("*/*/version_0/metrics.csv"))) == 1  # the trained cell's one phase

    rc = main(["run", "--suite", str(suite), "--data-root", str(synth_all), "--backbone", "tiny-clip",
               "--out", str(out), "--quiet"])  # again: both done, so only the summary
    captured = capfd.readouterr()
    assert rc == 0 and captured.out.strip().startswith("suite: 0 ran, 2 already done") and captured.err == ""


def test_quick_check_runs_whole_path_apart_from_the_demo(tmp_path, monkeypatch, capfd):
    """`xbench demo --quick` (two methods here, to keep the test short): tiny trees and the quick demo-clip in
    their own folders and cache entry, cells, leaderboard naming the backbone; the full demo's data folder, run
    folder and demo-clip cache entry stay untouched, so a later `make demo` starts clean."""
    from xdomain_bench.vlm.demo_clip import DemoClipConfig, demo_clip_dir, is_cached, parse_demo_spec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(QUIET_ENV, "0")
    rc = main(["demo", "--quick", "--only", "method=zero_shot,linear_probe", "--only", "dataset=cub,domainnet",
               "--jobs", "1", "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""
    for chatter in ("synthesising", "pretrain", "running ", "demo summary", "ok in"):  # --quiet: results only
        assert chatter not in captured.out
    assert "zero_shot" in captured.out and "linear_probe" in captured.out  # the leaderboard tables
    quick = parse_demo_spec("quick")
    assert is_cached(quick) and not demo_clip_dir(DemoClipConfig()).exists()
    for name in ("CUB_200_2011", "DomainNet"):
        marker = json.loads((tmp_path / "data_synth/demo_tiny" / name / ".xbench_synth.json").read_text())
        assert marker["scale"] == "tiny"
    assert not (tmp_path / "data_synth/demo").exists() and not (tmp_path / "runs/demo").exists()
    with (tmp_path / "runs/quick/leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} >= {"zero_shot", "linear_probe"}
    assert all("demo-clip:quick" in json.dumps(r) for r in rows)
    records = [json.loads(p.read_text()) for p in Path(tmp_path / "runs/quick/records").glob("*.json")]
    assert {r["cell"]["backbone"] for r in records} == {"demo-clip:quick"}
    assert {r["cell"]["seed"] for r in records} == {0} and {r["cell"]["budget"] for r in records} == {"steps:2"}


def test_quick_preset_is_a_config_of_its_own():
    from xdomain_bench.errors import BackboneError
    from xdomain_bench.vlm.demo_clip import PRESETS, DemoClipConfig, parse_demo_spec

    quick = parse_demo_spec("quick")
    assert quick == DemoClipConfig(**PRESETS["quick"]) and quick.key() != DemoClipConfig().key()
    assert parse_demo_spec("quick,steps=5") == DemoClipConfig(**{**PRESETS["quick"], "steps": 5})
    with pytest.raises(BackboneError, match="preset first"):
        parse_demo_spec("steps=5,quick")


def test_pretraining_draws_a_bar_not_lines(tmp_path, monkeypatch, capsys):
    """One bar update per pretraining step, and a single closing line instead of one every 50 steps."""
    from xdomain_bench.vlm.demo_clip import PRESETS, DemoClipConfig, pretrain

    monkeypatch.setenv(QUIET_ENV, "0")
    seen: list[float] = []
    original = Bar.update
    monkeypatch.setattr(Bar, "update", lambda self, completed=None, **kw: (seen.append(completed),
                                                                             original(self, completed, **kw))[1])
    lines: list[str] = []
    info = pretrain(DemoClipConfig(**{**PRESETS["quick"], "steps": 3}), tmp_path, lines.append)
    assert seen == [1, 2, 3] and [h["step"] for h in info["history"]] == [1, 3]
    assert len(lines) == 2 and lines[0].startswith("rendered ") and lines[1].startswith("pretrained demo-clip in ")


def test_quick_folders_are_apart_from_the_demo(tmp_path, capsys):
    import argparse

    from xdomain_bench.runner.demo import apply_quick

    def resolved(**flags):
        args = argparse.Namespace(**{**dict(quick=False, scale=None, seeds=None, max_steps=None, backbone=None,
                                            data_root=None, out=None), **flags})
        apply_quick(args)
        return args

    full, quick, tiny = resolved(), resolved(quick=True), resolved(scale="tiny")
    assert (full.data_root, full.out) == ("data_synth/demo", "runs/demo")
    assert (quick.data_root, quick.out, quick.scale) == ("data_synth/demo_tiny", "runs/quick", "tiny")
    assert (quick.backbone, quick.seeds, quick.max_steps) == ("demo-clip:quick", "0", 2)
    assert (tiny.data_root, tiny.out) == ("data_synth/demo_tiny", "runs/demo_tiny")
    assert resolved(quick=True, seeds="0,1", out="o").seeds == "0,1"  # explicit flags win
    assert main(["demo", "--quick", "--scale", "small", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("xbench: error: --quick runs the tiny trees")
