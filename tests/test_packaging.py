"""A regular (non-editable) install: the wheel built from a copy of the checkout, installed into a fresh virtual
environment (its dependencies reused from this one's site-packages, nothing downloaded), lists the methods and
runs a tiny cell; the README's example plugin, installed there too, adds a method and a dataset that run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from xdomain_bench.paths import project_root

ROOT = project_root()
PLUGIN = ROOT / "docs" / "examples" / "toy_plugin"
SOURCES = ["src/xdomain_bench", "methods", "datasets", "benchmarks/suites", "benchmarks/reported.csv",
           "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]


def sh(*argv, env=None, cwd=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """(bin folder of the fresh venv, environment) with the wheel and the example plugin installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "checkout"
    for rel in SOURCES:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / rel).is_dir():
            shutil.copytree(ROOT / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__", "resources"))
        else:
            shutil.copy(ROOT / rel, src / rel)
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src)
    venv = tmp / "venv"
    sh(getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv)
    site = Path(sh(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    (site / "_deps_from_dev_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = (tmp / "dist").glob("xdomain_bench-*.whl")
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", "--no-index"]
    sh(*pip, wheel)
    sh(*pip, "--no-build-isolation", shutil.copytree(PLUGIN, tmp / "toy_plugin"))
    env = {k: v for k, v in os.environ.items() if k not in ("XBENCH_HOME", "XBENCH_CARDS", "PYTHONPATH")}
    return venv / "bin", env, tmp


@pytest.mark.slow
def test_wheel_install_lists_methods_and_runs_a_cell(fresh_env):
    bin_dir, env, tmp = fresh_env
    where = sh(bin_dir / "python", "-c", "import xdomain_bench.paths as p; print(p.__file__, p.method_cards_dir())",
               env=env, cwd=tmp).stdout.split()
    assert all(str(tmp / "venv") in w for w in where)  # the installed copy and its packaged cards, not the checkout
    out = sh(bin_dir / "xbench", "list", "methods", env=env, cwd=tmp).stdout
    for card in (ROOT / "methods").glob("*.yaml"):
        assert f"│ {card.stem} " in out
    sh(bin_dir / "xbench", "data", "synth", "cub", "--data-root", tmp / "data", "--scale", "tiny", env=env, cwd=tmp)
    sh(bin_dir / "xbench", "run", "--method", "zero_shot", "--dataset", "cub", "--data-root", tmp / "data",
       "--backbone", "tiny-clip", "--out", tmp / "O", "--no-progress", env=env, cwd=tmp)
    (rec,) = [json.loads(p.read_text()) for p in (tmp / "O" / "records").glob("*.json")]
    assert rec["status"] == "ok" and rec["cell"]["backbone"] == "tiny-clip" and 0 <= rec["metrics"]["R@1"] <= 1
    out = sh(bin_dir / "xbench", "show", "suite", "smoke", "--only", "dataset=cub", env=env, cwd=tmp).stdout
    assert "resources/suites/smoke.yaml" in out.splitlines()[0]


@pytest.mark.slow
def test_example_plugin_adds_a_method_and_a_dataset(fresh_env):
    bin_dir, env, tmp = fresh_env
    assert "│ toy_zero_shot " in sh(bin_dir / "xbench", "list", "methods", env=env, cwd=tmp).stdout
    assert "│ toy_birds " in sh(bin_dir / "xbench", "list", "datasets", env=env, cwd=tmp).stdout
    sh(bin_dir / "xbench", "data", "synth", "toy_birds", "--data-root", tmp / "toy", "--scale", "tiny", env=env, cwd=tmp)
    sh(bin_dir / "xbench", "run", "--method", "toy_zero_shot", "--dataset", "toy_birds", "--data-root", tmp / "toy",
       "--out", tmp / "T", "--no-progress", env=env, cwd=tmp)
    (rec,) = [json.loads(p.read_text()) for p in (tmp / "T" / "records").glob("*.json")]
    assert rec["status"] == "ok" and rec["cell"]["method"] == "toy_zero_shot" and rec["cell"]["dataset"] == "toy_birds"
    assert rec["method_config"]["template"] == "{}"  # from the plugin's own card


def test_readme_shows_the_example_plugin_as_tested():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted(p for p in PLUGIN.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        assert path.read_text(encoding="utf-8").strip() in readme, f"README lacks {path.relative_to(ROOT)}"
