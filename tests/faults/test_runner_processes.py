"""Real processes (issue 17): UCDR-Adapter killed with SIGKILL in phase 1 and in phase 2, and stopped with
Ctrl-C (SIGINT), each resumed and compared with one uninterrupted run; and two `xbench run --suite`
processes started together on one output folder.

The signals are sent by the process to itself after a given optimiser step of a given phase (the
XBENCH_CRASH_* test hook in runner/resume.py), so the kill lands at the same point on every machine."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from xdomain_bench.cli import main
from xdomain_bench.runner.records import Cell

pytestmark = pytest.mark.slow  # about ten short fits in fresh interpreters

# 16 steps, 8 per phase at batch 8: phase 1 (no validation) saves a resume point every 2 steps, phase 2 after
# each validation (every 2 steps).
UCDR = ["run", "--method", "ucdr_adapter", "--dataset", "domainnet", "--max-steps", "16", "--no-progress",
        "--set", "method.phases.phase1.batch_size=8", "--set", "method.phases.phase2.batch_size=8",
        "--set", "method.phases.phase1.step_fraction=0.5", "--set", "method.phases.phase2.step_fraction=0.5"]
UCDR_CELL = Cell(method="ucdr_adapter", dataset="domainnet", protocol="ucdr", budget="steps:16",
                 method_overrides={"phases": {"phase1": {"batch_size": 8, "step_fraction": 0.5},
                                              "phase2": {"batch_size": 8, "step_fraction": 0.5}}})
SUITE = """name: two-runners
backbone: tiny-clip
seeds: [0, 1]
budget: {policy: steps, steps: 4}
methods: [zero_shot, linear_probe, coop]
variants: [clean]
datasets:
  cub:
    protocols:
      fgir_open: {}
  sketchy:
    protocols:
      uccdr_eccv21: {}
overrides:
  - where: {method: [coop, linear_probe]}
    method: {batch_size: 8}
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("synth")
    for name in ("domainnet", "cub", "sketchy"):
        get_dataset(name).synth(root, scale="tiny", seed=0)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache_home")


@pytest.fixture(autouse=True)
def _cache_env(cache, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(cache))


def xbench(args: list, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    full_env = {**os.environ, "XBENCH_CACHE": os.environ["XBENCH_CACHE"], **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "xdomain_bench.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, **popen)


def record(out: Path) -> dict:
    return json.loads((out / "records" / f"{UCDR_CELL.slug()}.json").read_text())


def phase_dir(out: Path, phase: str) -> Path:
    return out / "checkpoints" / UCDR_CELL.slug() / phase


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory, cache) -> dict:
    """The uninterrupted run, in this interpreter."""
    out = tmp_path_factory.mktemp("ucdr_ref")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBENCH_CACHE", str(cache))
        assert main([*UCDR, "--data-root", str(data_root), "--out", str(out)]) == 0
    rec = record(out)
    assert rec["status"] == "ok" and [p["steps"] for p in rec["training"]["phases"]] == [8, 8]
    return rec


@pytest.mark.parametrize(("phase", "step", "resumes_from"), [("phase1", 5, 4), ("phase2", 3, 2)])
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(reference, data_root, tmp_path, phase, step,
                                                             resumes_from):
    out = tmp_path / "out"
    killed = xbench([*UCDR, "--data-root", data_root, "--out", out],
                    env={"XBENCH_CRASH_AFTER_STEPS": str(step), "XBENCH_CRASH_PHASE": phase})
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    assert not (out / "records").exists()  # killed: no record at all
    saved = torch.load(phase_dir(out, phase) / "resume.ckpt", weights_only=False)
    assert saved["global_step"] == resumes_from and not (phase_dir(out, phase) / "done.json").exists()
    assert (phase_dir(out, "phase1") / "done.json").exists() == (phase == "phase2")

    assert main([*UCDR, "--data-root", str(data_root), "--out", str(out)]) == 0
    rec = record(out)
    trained = {p["name"]: p for p in rec["training"]["phases"]}
    assert trained[phase]["resumed"] is True
    assert rec["metrics"] == reference["metrics"]  # exact, every digit
    assert [p["steps"] for p in rec["training"]["phases"]] == [8, 8]
    assert not list(out.rglob("*.ckpt")) and not list(out.rglob("*.tmp"))


def test_ctrl_c_records_interrupted_prints_the_resume_command_and_exits_130(reference, data_root, tmp_path):
    out = tmp_path / "out"
    proc = xbench([*UCDR, "--data-root", data_root, "--out", out],
                  env={"XBENCH_CRASH_AFTER_STEPS": "5", "XBENCH_CRASH_PHASE": "phase1", "XBENCH_CRASH_SIGNAL": "INT"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    ours = [line for line in err.splitlines() if "xbench" in line or "KeyboardInterrupt" in line]
    assert len(ours) == 1 and "Traceback" not in err, err[-3000:]
    line = ours[0]
    assert line.startswith("xbench: interrupted ucdr_adapter on domainnet/ucdr/clean")
    assert "phase phase1 at step 5; it resumes from step 4" in line
    rec = record(out)
    assert rec["status"] == "interrupted" and "phase phase1 at step 5" in rec["error"]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))  # nothing half-written
    assert not (phase_dir(out, "phase1") / "done.json").exists()

    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[0] == "xbench"
    assert main(command[1:]) == 0  # the printed command, as printed
    rec = record(out)
    assert rec["status"] == "ok" and rec["metrics"] == reference["metrics"]


def test_two_suite_runners_on_one_folder_share_the_cells(data_root, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    out = tmp_path / "out"
    args = ["run", "--suite", suite, "--data-root", data_root, "--out", out, "--no-progress"]
    runners = [xbench(args), xbench(args)]
    results = [r.communicate(timeout=600) for r in runners]
    for runner, (_, err) in zip(runners, results):
        assert runner.returncode == 0, err[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    assert len(records) == 12 and {r["status"] for r in records} == {"ok"}  # 3 methods x 2 datasets x 2 seeds
    ran = []
    for stdout, _ in results:
        (summary,) = [line for line in stdout.splitlines() if line.startswith("suite: ")]
        ran.append(int(summary.split()[1]))
    assert sum(ran) == 12  # each cell trained and evaluated by exactly one of the two
    assert not list(out.rglob("*.ckpt")) and not (out / "claims").exists()  # no claim left behind

    assert main(["leaderboard", str(out), "--no-reported", "--quiet"]) == 0
    wide = pd.read_csv(out / "leaderboard_wide.csv", keep_default_na=False)
    assert len(wide) == 6 and set(wide["note"]) == {""}  # 3 methods x 2 datasets, none failed or missing
