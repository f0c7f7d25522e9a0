"""Runner fixtures: one data root holding every dataset's tiny synthetic tree, and small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Record fields that legitimately differ between two runs of the same cell (the H14 feature-cache entry says
# whether this run built the store or reused it, and how long that took).
VOLATILE = ("created_at", "timings", "throughput", "peak_memory", "feature_cache")


@pytest.fixture(scope="session")
def synth_all(tmp_path_factory) -> Path:
    """One data root with the tiny synthetic tree of all five datasets (what `make test` generates)."""
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("synth_all")
    for name in ("domainnet", "sketchy", "tuberlin", "cub", "fdrd"):
        get_dataset(name).synth(root, scale="tiny", seed=0)
    return root


def _stable_view(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in VOLATILE}
    if isinstance(out.get("notes"), dict):  # the cached manifest lives in each test's own XBENCH_CACHE
        out["notes"] = {k: v for k, v in out["notes"].items() if k != "manifest_path"}
    if "training" in out:
        phases = [{k: v for k, v in ph.items() if k != "seconds"} for ph in out["training"]["phases"]]
        out["training"] = {**out["training"], "phases": phases}
    return out


@pytest.fixture
def stable_view():
    """A record without what differs between identical runs: timestamps, timings, memory, cache paths."""
    return _stable_view


def _xbench(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xdomain_bench.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def xbench_subprocess():
    """`python -m xdomain_bench.cli ARGS` in a fresh interpreter (what Lightning's DDP re-launches per rank)."""
    return _xbench
