"""Session-wide fixtures: the seeded tiny backbone and synthetic trees (real loaders, real layouts), and the
isolation every test gets (its own caches and temporary folder, global RNG state restored)."""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Environment variables that name a place the suite or its libraries write to.
CACHE_VARS = ("XBENCH_CACHE", "HF_HOME", "HF_HUB_CACHE", "TMPDIR")


def _point_caches(base, setenv) -> None:
    for var in CACHE_VARS:
        folder = base / var.lower()
        folder.mkdir(parents=True, exist_ok=True)
        setenv(var, str(folder))


def pytest_sessionfinish(session, exitstatus):
    """A run that collected nothing fails as an error (exit 1), never as pytest's "no tests" status 5."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _session_caches(tmp_path_factory):
    """Session-scoped fixtures (built before any per-test fixture) write under pytest's tmp paths too."""
    with pytest.MonkeyPatch.context() as mp:
        _point_caches(tmp_path_factory.mktemp("session_caches"), mp.setenv)
        mp.setattr(tempfile, "tempdir", os.environ["TMPDIR"])
        yield


@pytest.fixture(autouse=True)
def _xbench_isolation(tmp_path_factory, monkeypatch):
    """Every test: its own XBENCH_CACHE, Hugging Face caches and TMPDIR under pytest's tmp paths, so nothing lands
    in ~/.cache or /tmp outside pytest's folders; the global torch, numpy and Python RNG states are put back
    afterwards, so a test that reseeds cannot change what a later test draws."""
    import torch  # here, not at the top: the xdist controller never needs it

    _point_caches(tmp_path_factory.mktemp("env"), monkeypatch.setenv)  # beside tmp_path: tests may list that
    monkeypatch.setattr(tempfile, "tempdir", os.environ["TMPDIR"])
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    yield
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@pytest.fixture(scope="session")
def tiny_vlm():
    from xdomain_bench.vlm import load_backbone

    return load_backbone("tiny-clip")


@pytest.fixture(scope="session")
def synth_domainnet(tmp_path_factory):
    """A tiny synthetic DomainNet tree in the official layout; returns the data root."""
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("synth_domainnet")
    get_dataset("domainnet").synth(root, scale="tiny", seed=0)
    return root
