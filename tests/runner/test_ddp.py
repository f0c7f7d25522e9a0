"""`xbench run --devices 2` under Lightning DDP on CPU (gloo): the command is re-launched for rank 1 when it
starts, both ranks train, validate and evaluate each on its share of every role (gathered, counts checked),
rank 0 computes the metrics and writes the one record."""

from __future__ import annotations

import json

import pytest
import torch

from xdomain_bench.cli import main
from xdomain_bench.runner.records import Cell

pytestmark = pytest.mark.slow  # fresh interpreters, one of them launching a second rank


def _run(xbench_subprocess, root, out, *args: str) -> dict:
    proc = xbench_subprocess(["run", "--dataset", "sketchy", "--accelerator", "cpu", "--no-progress",
                              "--data-root", root, "--out", out, *args])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    recs = list((out / "records").glob("*.json"))
    assert len(recs) == 1  # written once, by rank 0
    return json.loads(recs[0].read_text())


def _counts_match_manifest(rec: dict) -> None:
    manifest = rec["manifest"]["counts"]
    assert rec["counts"]["n_query"] == manifest["query"] and rec["counts"]["n_gallery"] == manifest["gallery"]


def test_linear_probe_two_processes_match_one(synth_all, tmp_path, xbench_subprocess, tiny_vlm):
    """What is compared, and why it is comparable: one process at batch 8 against two processes at batch 4
    each. Our domain-balanced sampler deals batches round-robin to the ranks, so ranks 0 and 1 together see
    exactly the one-process batch (4 + 4 images of the same 2 domains, same order), and DDP's gradient
    average over ranks equals the one-process mean loss (linear probe: per-sample cross-entropy, no
    batch-coupled term). Augmentation is off because its per-sample seeds follow each rank's batch index.
    The reductions run in a different order, so weights agree to float32 rounding (1e-5), not bit for bit.
    The metrics are means over queries of per-query values in [0, 1] that depend only on the ranking, so they
    move only where two gallery scores of one query lie within that rounding and swap; one such swap changes
    that query's value by at most 1, the mean by at most 1 / n_query. That one query's worth is the tolerance:
    a real DDP fault (a rank's batch lost, gradients summed instead of averaged) moves many queries."""
    common = ["--method", "linear_probe", "--max-steps", "2", "--set", "data.augment=false"]
    one = _run(xbench_subprocess, synth_all, tmp_path / "one", *common, "--set", "method.batch_size=8")
    two = _run(xbench_subprocess, synth_all, tmp_path / "two", *common, "--set", "method.batch_size=4", "--devices", "2")
    for rec in (one, two):
        assert rec["status"] == "ok" and rec["training"]["phases"][0]["steps"] == 2
        _counts_match_manifest(rec)
    assert two["metrics"].keys() == one["metrics"].keys()
    one_query = 1 / one["counts"]["n_query"]
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, abs=one_query), name
    assert two["training"]["phases"][0]["selected"] == one["training"]["phases"][0]["selected"]
    w1, w2 = (torch.load(out / "checkpoints" / Cell(**rec["cell"]).slug() / "main" / "selected.pt")
              for out, rec in ((tmp_path / "one", one), (tmp_path / "two", two)))
    assert list(w1) == list(w2) == ["proj_v"]
    torch.testing.assert_close(w2["proj_v"], w1["proj_v"], rtol=1e-5, atol=1e-6)
    start = tiny_vlm.backbone_tensor("proj_v")  # the probe did move, far beyond that tolerance
    assert (w1["proj_v"] - start).abs().max() > 1e-4


def test_zero_shot_under_ddp_matches_exactly(synth_all, tmp_path, xbench_subprocess):
    """Nothing to fit, fixed weights: two ranks sharing the evaluation must not change a thing."""
    assert main(["run", "--dataset", "sketchy", "--method", "zero_shot", "--data-root", str(synth_all),
                 "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    (path,) = (tmp_path / "one" / "records").glob("*.json")
    one = json.loads(path.read_text())
    two = _run(xbench_subprocess, synth_all, tmp_path / "two", "--method", "zero_shot", "--devices", "2")
    assert two["metrics"] == one["metrics"]
    _counts_match_manifest(two)


def test_zero_shot_two_ranks_embed_each_sample_once(synth_all, tmp_path, xbench_subprocess):
    """DomainNet's tiny tree has 127 queries and 131 gallery images: odd, so the ranks' shares differ by one
    and the gather pads. Each rank embeds its strided share, and the metrics equal the one-process run's."""
    args = ["--dataset", "domainnet", "--method", "zero_shot", "--accelerator", "cpu", "--no-progress",
            "--data-root", str(synth_all)]
    assert main(["run", *args, "--out", str(tmp_path / "one")]) == 0
    (path,) = (tmp_path / "one" / "records").glob("*.json")
    one = json.loads(path.read_text())
    two = _run(xbench_subprocess, synth_all, tmp_path / "two", "--method", "zero_shot", "--devices", "2",
               "--dataset", "domainnet")  # the last --dataset wins over _run's
    _counts_match_manifest(two)
    n_query, n_gallery = two["manifest"]["counts"]["query"], two["manifest"]["counts"]["gallery"]
    assert n_query % 2 == 1 and n_gallery % 2 == 1
    assert two["distributed"] == {"world_size": 2, "per_rank": {"query": [(n_query + 1) // 2, n_query // 2],
                                                                  "gallery": [(n_gallery + 1) // 2, n_gallery // 2]}}
    assert "distributed" not in one
    assert two["metrics"] == one["metrics"]
    assert two["counts"] == one["counts"]
