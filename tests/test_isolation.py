"""The suite's own isolation (tests/conftest.py), run on a two-test inner session: each test gets its own caches
and temporary folder under pytest's tmp paths, the global RNG state a test leaves is undone, and a session that
collects nothing fails."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

INNER = '''
import os, random, tempfile
from pathlib import Path

import numpy as np
import torch

from xdomain_bench.paths import cache_dir

SEEN = {}
VARS = ("XBENCH_CACHE", "HF_HOME", "HF_HUB_CACHE", "TMPDIR")


def test_first_reseeds_everything():
    SEEN.update({v: os.environ[v] for v in VARS})
    SEEN["rng"] = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    assert cache_dir() == Path(os.environ["XBENCH_CACHE"]) and tempfile.gettempdir() == os.environ["TMPDIR"]
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    torch.rand(3), np.random.rand(3), random.random()


def test_second_sees_fresh_folders_and_the_old_rng_state():
    assert all(os.environ[v] != SEEN[v] for v in VARS)
    torch_state, np_keys, py_state = SEEN["rng"]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == np_keys).all() and random.getstate() == py_state
    with open(Path(tempfile.gettempdir()) / "scratch", "w") as f:
        f.write("x")
    print("PATHS", *(os.environ[v] for v in VARS), tempfile.gettempdir())
'''


def test_each_test_gets_its_own_folders_and_its_rng_state_back(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=2)
    (line,) = [ln for ln in result.outlines if "PATHS " in ln]
    base, home = Path(pytester.path).parent.resolve(), Path.home() / ".cache"  # the outer session's tmp folder
    paths = [Path(p) for p in line.split("PATHS ", 1)[1].split()]
    assert len(paths) == 5
    for path in paths:
        assert path.resolve().is_relative_to(base) and not path.resolve().is_relative_to(home), path


def test_a_session_that_collects_nothing_fails(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_inner="def test_one():\n    pass\n")
    assert pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "no_such_test").ret == 1
    assert pytester.runpytest_inprocess("-p", "no:cacheprovider").ret == 0
