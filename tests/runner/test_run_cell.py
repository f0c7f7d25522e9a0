"""`xbench run` + `xbench leaderboard` end to end on the synthetic world, and bad-input handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.leaderboard.long import LONG_COLUMNS


@pytest.fixture(scope="module")
def zero_shot_run(synth_domainnet, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["run", "--method", "zero_shot", "--dataset", "domainnet", "--data-root", str(synth_domainnet),
               "--holdout", "sketch", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_record_fields(zero_shot_run):
    (path,) = sorted((zero_shot_run / "records").glob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok"
    for field in ("schema_version", "cell_key", "method_config", "backbone", "seed", "metrics", "counts",
                  "trainable_params", "timings", "precision", "device", "library_versions", "code_version"):
        assert field in rec, field
    assert rec["trainable_params"]["total"] == 0
    assert rec["query_domain"] == "sketch" and rec["gallery"] == "unseen"
    assert rec["backbone"]["weights_sha256"]
    assert {"mAP@200", "Prec@200"} <= set(rec["metrics"])


def test_record_metrics_match_an_independent_evaluation(zero_shot_run, synth_domainnet, tiny_vlm):
    """Recompute mAP@200 with a brute-force float64 loop from the manifest and the frozen encoder."""
    import numpy as np
    import torch

    from xdomain_bench.data.datamodule import RetrievalDataModule

    rec = json.loads(next((zero_shot_run / "records").glob("*.json")).read_text())
    dm = RetrievalDataModule("domainnet", synth_domainnet, "ucdr", "clean", "sketch", preprocess=tiny_vlm.preprocess)
    dm.setup()

    def embed(role):
        xs, ys = [], []
        for b in dm.eval_dataloader(role):
            xs.append(tiny_vlm.encode_image(b["pixels"]).double())
            ys.append(b["class_id"])
        x = torch.nn.functional.normalize(torch.cat(xs), dim=-1).numpy()
        return x, torch.cat(ys).numpy()

    q, ql = embed("query")
    g, gl = embed("gallery")
    assert rec["counts"]["n_query"] == len(q) and rec["counts"]["n_gallery"] == len(g)
    aps, no_hit = [], {100: 0, 200: 0}
    for i in range(len(q)):
        order = np.argsort(-(g @ q[i]), kind="stable")[:200]
        rel = (gl[order] == ql[i]).astype(float)
        hits = np.cumsum(rel)
        aps.append(float((hits / np.arange(1, len(rel) + 1) * rel).sum() / hits[-1]) if hits[-1] else 0.0)
        for k in no_hit:
            no_hit[k] += int(hits[min(k, len(hits)) - 1] == 0)
    assert rec["metrics"]["mAP@200"] == pytest.approx(np.mean(aps), abs=1e-6)
    # H(k) = 0 counts are record counts, not metrics (the leaderboard averages metrics over seeds)
    assert {k: rec["counts"][f"n_queries_no_hit@{k}"] for k in no_hit} == no_hit
    assert not [m for m in rec["metrics"] if m.startswith("n_")]


def test_leaderboard_csv(zero_shot_run, capsys):
    assert main(["leaderboard", str(zero_shot_run), "--quiet"]) == 0
    df = pd.read_csv(zero_shot_run / "leaderboard.csv")
    assert list(df.columns) == LONG_COLUMNS
    rec = json.loads(next((zero_shot_run / "records").glob("*.json")).read_text())
    ours = df[df.source == "ours"]
    for metric in ("mAP@200", "Prec@200"):
        row = ours[(ours.metric == metric) & (ours.method == "zero_shot")]
        assert len(row) == 1 and row.iloc[0].query_domain == "sketch"
        assert row.iloc[0].value == pytest.approx(rec["metrics"][metric], abs=1e-6)
    reported = df[df.source == "reported"]
    assert len(reported) and set(reported.dataset) == {"domainnet"}  # only benchmarks this run covers
    wide = pd.read_csv(zero_shot_run / "leaderboard_wide.csv")
    row = wide[wide.source == "ours"][["method", "query_domain", "gallery", "mAP@200", "mAP@200 n"]]
    assert row.values.tolist() == [["zero_shot", "sketch", "unseen", pytest.approx(rec["metrics"]["mAP@200"], abs=1e-6), 1]]
    assert "## domainnet / ucdr" in (zero_shot_run / "leaderboard.md").read_text()


@pytest.mark.parametrize("argv,needle", [
    (["--method", "nope", "--dataset", "domainnet"], "unknown method 'nope'; known methods: "),
    (["--method", "zero_shot", "--dataset", "nope"], "unknown dataset 'nope'; known datasets: "),
    (["--method", "zero_shot", "--dataset", "domainnet", "--backbone", "resnet"], "unknown backbone spec"),
])
def test_bad_names_give_one_line(argv, needle, synth_domainnet, tmp_path, capsys):
    rc = main(["run", *argv, "--data-root", str(synth_domainnet), "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "records").exists()


def test_missing_data_root_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "no_such_root"
    proc = subprocess.run([sys.executable, "-m", "xdomain_bench.cli", "run", "--method", "zero_shot", "--dataset",
                           "domainnet", "--data-root", str(missing), "--out", str(tmp_path / "o"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and "DomainNet" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "records").exists()
