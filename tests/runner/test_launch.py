"""Launchers (runner/launch.py): `--shard i/N`, the local worker pool and submitit's executor give the records
and leaderboard of a serial run; flag errors are one line, before any work."""

from __future__ import annotations

import json
import random

import pytest
import submitit

from xdomain_bench.cli import main
from xdomain_bench.runner.launch import parse_shard, shard_cells, submit_cells
from xdomain_bench.runner.records import Cell
from xdomain_bench.runner.suite import expand_suite, load_suite, parse_only

ONLY = "method=zero_shot,linear_probe,dataset=sketchy,cub"  # 4 smoke cells: 2 trained, 2 zero-shot
KWARGS = {"accelerator": "cpu", "progress": False}


def _run(root, out, *extra: str) -> int:
    return main(["run", "--suite", "smoke", "--only", ONLY, "--data-root", str(root), "--out", str(out),
                 "--no-progress", "--accelerator", "cpu", *extra])


def _records(out, stable_view) -> dict[str, dict]:
    return {p.name: stable_view(json.loads(p.read_text())) for p in sorted((out / "records").glob("*.json"))}


def _leaderboard(out) -> str:
    assert main(["leaderboard", str(out), "--quiet"]) == 0
    return (out / "leaderboard.csv").read_text()


@pytest.fixture(scope="module")
def serial(synth_all, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    assert _run(synth_all, out) == 0
    return out


def test_shards_are_disjoint_cover_the_suite_and_ignore_order():
    cells = [Cell(method=m, dataset=d, protocol="p", seed=s, data_options={"gallery": g} if g else {})
             for m in ("zero_shot", "coop", "vpt") for d in ("cub", "sketchy") for s in range(3) for g in ("", "mixed")]
    keys = [c.key() for c in cells]
    for count in (1, 2, 3, 7, len(cells) + 2):
        shards = [[c.key() for c in shard_cells(cells, i, count)] for i in range(count)]
        assert sorted(k for s in shards for k in s) == sorted(keys)  # cover, and no cell twice
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1
        for shard in shards:  # suite order kept within a shard
            assert shard == [k for k in keys if k in set(shard)]
    shuffled = list(cells)
    random.Random(0).shuffle(shuffled)
    assert {c.key() for c in shard_cells(shuffled, 1, 3)} == {c.key() for c in shard_cells(cells, 1, 3)}
    assert parse_shard("3/4") == (3, 4)


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "bad --shard '2/2'; write i/N with 0 <= i < N"),
    (["--shard", "x"], "bad --shard 'x'"),
    (["--jobs", "2"], "--jobs goes with --launcher local or --launcher slurm"),
    (["--launcher", "local", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--launcher", "local", "--devices", "2"], "--launcher local runs one cell per worker on one device"),
    (["--launcher", "slurm"], "--launcher slurm needs SLURM, but there is no sbatch on this machine"),
    (["--num-nodes", "0"], "--num-nodes must be >= 1, got 0"),
])
def test_launch_flag_errors_are_one_line(synth_all, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("PATH", str(tmp_path / "no_slurm_here"))  # no sbatch, whatever the machine has
    assert _run(synth_all, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xbench: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_one_cell_refuses_suite_flags(synth_all, tmp_path, capsys):
    rc = main(["run", "--method", "zero_shot", "--dataset", "sketchy", "--data-root", str(synth_all),
               "--out", str(tmp_path / "out"), "--launcher", "local"])
    assert rc == 2
    assert capsys.readouterr().err == ("xbench: error: --launcher applies to a suite (--suite); one cell runs in "
                                       "this process\n")


@pytest.mark.slow  # worker processes import torch and Lightning afresh
def test_local_pool_and_two_shards_give_the_serial_leaderboard(serial, synth_all, tmp_path, stable_view):
    assert _run(synth_all, tmp_path / "pool", "--launcher", "local", "--jobs", "2") == 0
    for i in range(2):  # two shards into one folder, as two array tasks would
        assert _run(synth_all, tmp_path / "shards", "--shard", f"{i}/2") == 0
    want = _records(serial, stable_view)
    assert len(want) == 4
    for out in (tmp_path / "pool", tmp_path / "shards"):
        assert _records(out, stable_view) == want
        assert _leaderboard(out) == _leaderboard(serial)


@pytest.mark.slow
def test_submitit_local_executor_gives_the_serial_records(serial, synth_all, tmp_path, stable_view):
    cells = expand_suite(load_suite("smoke"), only=parse_only([ONLY]))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j")
    executor.update_parameters(timeout_min=10)
    jobs = submit_cells(executor, cells, synth_all, tmp_path / "out", KWARGS)
    results = [job.result() for job in jobs]
    assert sorted(r["status"] for r in results) == ["ok"] * 4
    assert len({r["pid"] for r in results}) >= 2  # ran in separate worker processes
    assert {Cell(**r["cell"]).key() for r in results} == {c.key() for c in cells}
    assert _records(tmp_path / "out", stable_view) == _records(serial, stable_view)
    for job in jobs:  # a log per job
        assert job.paths.stdout.is_file()
    # submitting again finds every cell done: nothing is queued
    assert submit_cells(executor, cells, synth_all, tmp_path / "out", KWARGS) == []
