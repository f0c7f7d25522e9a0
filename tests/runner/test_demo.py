"""`xbench demo`: trees, stale records, shared training across galleries, and the demo end to end on a
CI-sized slice (tiny trees, a small demo-clip pretrained in the test) regressed against
benchmarks/golden/demo_ci.csv."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.errors import DataError
from xdomain_bench.methods.base import method_names
from xdomain_bench.paths import project_root
from xdomain_bench.runner import demo
from xdomain_bench.runner.records import Cell, record_path, write_record
from xdomain_bench.runner.suite import expand_suite, load_suite
from xdomain_bench.runner.suite_run import register_expected

SUITE = project_root() / "benchmarks" / "suites" / "demo.yaml"
GOLDEN_CI = project_root() / "benchmarks" / "golden" / "demo_ci.csv"
# The CI slice: a small demo-clip (pretrained in ~10 s), tiny trees, one seed, two steps per cell.
CI_BACKBONE = ("demo-clip:image_size=32,patch_size=8,vision_width=48,vision_layers=2,text_width=48,text_layers=1,"
               "embed_dim=32,per_class_domain=2,steps=30,batch_size=32,warmup=5")
CI_ARGS = ["--scale", "tiny", "--seeds", "0", "--max-steps", "2", "--backbone", CI_BACKBONE, "--jobs", "2",
           "--no-progress"]


def test_demo_suite_covers_every_method_and_synthetic_benchmark():
    suite = load_suite(SUITE)
    cells = expand_suite(suite)
    assert {c.method for c in cells} == set(method_names())
    assert {(c.dataset, c.protocol) for c in cells} == {("domainnet", "ucdr"), ("cub", "fgir_open"), ("fdrd", "itr")}
    dn = [c for c in cells if c.dataset == "domainnet"]
    assert {c.holdout for c in dn} == {"sketch"} and {c.data_options["gallery"] for c in dn} == {"unseen", "mixed"}
    assert {c.seed for c in cells} == {0, 1, 2} and {c.backbone for c in cells} == {"demo-clip"}
    assert {c.budget for c in cells} == {"matched:1280"}  # every method sees the same samples


def test_trees_are_written_once_and_foreign_folders_refused(tmp_path):
    lines = demo.ensure_trees(tmp_path, ["cub"], log=lambda *_: None, scale="tiny")
    assert "written" in lines[0] and (tmp_path / "CUB_200_2011" / demo.SYNTH_MARKER).is_file()
    stamp = (tmp_path / "CUB_200_2011" / demo.SYNTH_MARKER).stat().st_mtime_ns
    assert "kept" in demo.ensure_trees(tmp_path, ["cub"], log=lambda *_: None, scale="tiny")[0]
    assert (tmp_path / "CUB_200_2011" / demo.SYNTH_MARKER).stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="not the demo's synthetic tree"):  # another scale
        demo.ensure_trees(tmp_path, ["cub"], log=lambda *_: None, scale="small")
    (tmp_path / "DomainNet").mkdir()  # e.g. real data: never overwritten
    with pytest.raises(DataError, match="remove it or pass another --data-root"):
        demo.ensure_trees(tmp_path, ["domainnet"], log=lambda *_: None, scale="tiny")


def _fake_record(out, cell: Cell, config_key: str) -> None:
    write_record(out, cell, {"cell_key": cell.key(), "cell": cell.to_dict(), "status": "ok",
                             "backbone": {"backend": "demo-clip", "config_key": config_key}})
    phase = out / "checkpoints" / cell.slug() / "main"
    phase.mkdir(parents=True)
    (phase / "done.json").write_text("{}")


def test_records_of_another_demo_clip_config_are_set_aside(tmp_path):
    old = Cell(method="coop", dataset="cub", protocol="fgir_open", backbone="demo-clip", seed=0)
    new = Cell(method="coop", dataset="cub", protocol="fgir_open", backbone="demo-clip", seed=1)
    _fake_record(tmp_path, old, "aaaa")
    _fake_record(tmp_path, new, "bbbb")
    assert demo.set_aside_stale(tmp_path, "bbbb", log=lambda *_: None) == 1
    assert not record_path(tmp_path, old).exists() and record_path(tmp_path, new).exists()
    assert (tmp_path / "stale" / "aaaa" / "records" / record_path(tmp_path, old).name).is_file()
    assert (tmp_path / "stale" / "aaaa" / "checkpoints" / old.slug() / "main" / "done.json").is_file()
    assert not (tmp_path / "checkpoints" / old.slug()).exists()


def test_records_whose_suite_settings_changed_are_set_aside(tmp_path):
    base = dict(method="ucdr_adapter", dataset="domainnet", protocol="ucdr", holdout="sketch", backbone="demo-clip",
                seed=0, data_options={"gallery": "unseen"})
    old = Cell(**base, method_overrides={"batch_size": 64})
    new = Cell(**base, method_overrides={"batch_size": 64, "phases": {"phase1": {"optimizer": {"lr": 1e-3}}}})
    other = Cell(**{**base, "seed": 1}, method_overrides={"batch_size": 64})  # not in this run: kept
    for cell in (old, other):
        _fake_record(tmp_path, cell, "k")
    register_expected(tmp_path, [old, other])
    assert demo.set_aside_stale(tmp_path, "k", log=lambda *_: None, cells=[new]) == 1
    expected = json.loads((tmp_path / "expected_cells.json").read_text())
    assert [c["key"] for c in expected] == [other.key()]  # the old settings are no longer asked for
    assert not record_path(tmp_path, old).exists() and record_path(tmp_path, other).exists()
    assert (tmp_path / "stale" / "settings" / "records" / record_path(tmp_path, old).name).is_file()
    assert demo.set_aside_stale(tmp_path, "k", log=lambda *_: None, cells=[new]) == 0


def test_gallery_cells_share_one_training(tmp_path):
    base = dict(method="coop", dataset="domainnet", protocol="ucdr", holdout="sketch", backbone="demo-clip", seed=0)
    unseen, mixed = Cell(**base, data_options={"gallery": "unseen"}), Cell(**base, data_options={"gallery": "mixed"})
    other_seed = Cell(**{**base, "seed": 1}, data_options={"gallery": "mixed"})
    assert demo.training_identity(unseen) == demo.training_identity(mixed) != demo.training_identity(other_seed)
    phase = tmp_path / "checkpoints" / unseen.slug() / "main"
    phase.mkdir(parents=True)
    (phase / "selected.pt").write_bytes(b"weights")
    (phase / "done.json").write_text(json.dumps({"name": "main", "steps": 3}))
    assert demo.share_training(tmp_path, unseen.to_dict(), mixed) == 1
    copied = tmp_path / "checkpoints" / mixed.slug() / "main"
    assert (copied / "selected.pt").read_bytes() == b"weights" and json.loads((copied / "done.json").read_text())["steps"] == 3
    assert demo.share_training(tmp_path, unseen.to_dict(), mixed) == 0  # already there


def test_bad_jobs_is_one_clear_error(tmp_path, capsys):
    assert main(["demo", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ci_demo(tmp_path_factory):
    """The CI slice of the demo, run twice: fresh (pretraining and all cells), then again (everything reused)."""
    base = tmp_path_factory.mktemp("demo_ci")
    args = ["demo", "--data-root", str(base / "data"), "--out", str(base / "run"), *CI_ARGS]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBENCH_CACHE", str(base / "cache"))
        assert main(args) == 0
        first = {p.name: p.read_bytes() for p in sorted((base / "run" / "records").glob("*.json"))}
        yield {"base": base, "args": args, "first": first, "mp": mp}


@pytest.mark.slow
def test_ci_slice_has_every_cell_and_matches_the_golden(ci_demo):
    run = ci_demo["base"] / "run"
    wide = pd.read_csv(run / "leaderboard_wide.csv", keep_default_na=False)
    assert set(wide["method"]) == set(method_names()) and set(wide["source"]) == {"ours"}
    counts = [c for c in wide.columns if c.endswith(" n")]
    for _, row in wide.iterrows():  # every row has numbers, or says why it cannot have them
        assert row["note"].startswith("n/a (") if row["note"] else any(row[c] != "" for c in counts), row.to_dict()
    long = pd.read_csv(run / "leaderboard.csv", keep_default_na=False)
    assert set(long["backbone"]) == {CI_BACKBONE}
    assert main(["regress", str(run), "--against", str(GOLDEN_CI)]) == 0
    assert "<h2 id=\"leaderboard\">" in (run / "report.html").read_text(encoding="utf-8")  # the demo's last step


@pytest.mark.slow
def test_ci_slice_rerun_reuses_the_backbone_and_every_cell(ci_demo, monkeypatch, capsys):
    from xdomain_bench.vlm import demo_clip

    def no_pretraining(*args, **kwargs):
        raise AssertionError("demo-clip pretrained again")

    monkeypatch.setattr(demo_clip, "pretrain", no_pretraining)
    monkeypatch.setattr(demo, "run_group", lambda *a, **k: pytest.fail("a finished cell ran again"))
    monkeypatch.setenv("XBENCH_CACHE", str(ci_demo["base"] / "cache"))  # the first run's (each test has its own)
    assert main(ci_demo["args"]) == 0
    out = capsys.readouterr().out
    assert "done already" in out and "0 ran" in out
    again = {p.name: p.read_bytes() for p in sorted((ci_demo["base"] / "run" / "records").glob("*.json"))}
    assert again == ci_demo["first"]
