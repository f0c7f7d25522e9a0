"""The smoke suite end to end: every method on every dataset, resume-by-skipping, and CI regression against
the committed golden file (benchmarks/golden/smoke.csv)."""

from __future__ import annotations

import itertools
import json
import shutil

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.methods.base import method_names
from xdomain_bench.paths import project_root

pytestmark = pytest.mark.slow  # ~1-2 min: every method on every dataset (50 cells), a few training steps each

SUITE = project_root() / "benchmarks" / "suites" / "smoke.yaml"
GOLDEN = project_root() / "benchmarks" / "golden" / "smoke.csv"
DATASETS = ("domainnet", "sketchy", "tuberlin", "cub", "fdrd")


@pytest.fixture(scope="module")
def smoke(synth_all, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    rc = main(["run", "--suite", str(SUITE), "--data-root", str(synth_all), "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def _records(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def _snapshot(out) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "expected_cells.json"}


def test_every_method_on_every_dataset_is_ok(smoke):
    recs = _records(smoke)
    assert sorted((r["method"], r["dataset"]) for r in recs) == sorted(itertools.product(method_names(), DATASETS))
    for rec in recs:
        assert rec["status"] == "ok", (rec["method"], rec["dataset"], rec.get("error"))
        manifest = rec["manifest"]["counts"]
        assert rec["counts"]["n_query"] == manifest["query"]
        if rec["dataset"] != "fdrd":  # image-text: the gallery is the query images' captions
            assert rec["counts"]["n_gallery"] == manifest["gallery"]
        trained = [p for p in rec["training"]["phases"] if "skipped" not in p]
        assert bool(trained) == (rec["method"] != "zero_shot")
        assert all(0 < p["steps"] <= 2 and p["batch_size"] == 8 for p in trained)


def test_running_again_trains_nothing(smoke, synth_all, monkeypatch, capsys):
    before = _snapshot(smoke)
    assert any(k.startswith("checkpoints/") for k in before)  # the first run did train

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr("xdomain_bench.runner.execute.run_cell", no_training)
    capsys.readouterr()
    rc = main(["run", "--suite", str(SUITE), "--data-root", str(synth_all), "--out", str(smoke), "--no-progress"])
    assert rc == 0
    assert f"suite: 0 ran, {len(method_names()) * len(DATASETS)} already done, 0 failed" in capsys.readouterr().out
    assert _snapshot(smoke) == before  # no record or checkpoint written, touched or added


def test_smoke_matches_the_committed_golden_file(smoke, capsys):
    golden = pd.read_csv(GOLDEN, keep_default_na=False)
    assert set(golden["method"]) == set(method_names()) and set(golden["dataset"]) == set(DATASETS)
    rc = main(["regress", str(smoke), "--against", str(GOLDEN)])
    assert rc == 0, capsys.readouterr().out
    assert f"regress: {len(golden)} metrics within their tolerances (one query's worth)" in capsys.readouterr().out


def _plant(smoke, tmp_path, method: str, dataset: str, metric: str, delta: float):
    run = tmp_path / "run"
    shutil.copytree(smoke / "records", run / "records")
    (path,) = (run / "records").glob(f"{method}_{dataset}_*.json")
    rec = json.loads(path.read_text())
    rec["metrics"][metric] += delta
    path.write_text(json.dumps(rec))
    return run, path


def test_regress_fails_on_a_planted_drift(smoke, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")  # the rich table at full width
    golden = tmp_path / "golden.csv"
    assert main(["regress", str(smoke), "--against", str(golden), "--update"]) == 0
    n_query = json.loads(next((smoke / "records").glob("coop_cub_*.json")).read_text())["counts"]["n_query"]
    assert n_query == 64  # the tiny CUB tree: one query's worth is 1/64 = 0.0156
    run, _ = _plant(smoke, tmp_path, "coop", "cub", "MAP@R", 0.015)  # within one query's worth
    capsys.readouterr()
    assert main(["regress", str(run), "--against", str(golden)]) == 0
    run, path = _plant(smoke, tmp_path / "b", "coop", "cub", "R@2", 0.02)  # beyond it
    capsys.readouterr()
    assert main(["regress", str(run), "--against", str(golden)]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "drift" in line]
    assert len(rows) == 1 and "coop" in rows[0] and "R@2" in rows[0] and "+0.0200" in rows[0]
    path.unlink()  # a cell that disappeared: every one of its metrics is missing
    assert main(["regress", str(run), "--against", str(golden)]) == 1
    missing = [line for line in capsys.readouterr().out.splitlines() if "missing" in line]
    n_metrics = len(json.loads((smoke / "records" / path.name).read_text())["metrics"])
    assert len(missing) == n_metrics and all("coop" in line for line in missing)
