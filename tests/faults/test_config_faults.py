"""Fault matrix for configuration and budget input (issue 15), tried as a user would type them.

Each row: the `xbench run` arguments (and a suite edit) -> exit 2 -> one `xbench: error:` line holding the
fragment -> no output folder left behind, nothing trained (the check runs before any data or backbone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xdomain_bench.cli import main
from xdomain_bench.paths import project_root

SMOKE = (project_root() / "benchmarks" / "suites" / "smoke.yaml").read_text(encoding="utf-8")
CELL = ["run", "--method", "coop", "--dataset", "cub", "--data-root", "{root}", "--out", "{out}"]
SUITE = ["run", "--suite", "{suite}", "--data-root", "{root}", "--out", "{out}"]

CASES = [
    # (id, arguments, suite text or None, fragment)
    ("set-mapping-typo", [*CELL, "--set", "method.optimizer={lrr: 0.5}"], None,
     "unknown option 'optimizer.lrr' for method 'coop' (from --set); valid keys under optimizer: betas, lr,"),
    ("set-dotted-typo", [*CELL, "--set", "method.optimizer.lrr=0.5"], None, "unknown option 'optimizer.lrr'"),
    ("set-not-a-number", [*CELL, "--set", "method.batch_size=abc"], None, "bad value for 'batch_size' of method 'coop'"),
    ("set-lr-not-a-number", [*CELL, "--set", "method.optimizer={lr: fast}"], None, "'optimizer.lr'"),
    ("set-lr-zero", [*CELL, "--set", "method.optimizer.lr=0"], None, "greater than 0"),
    ("set-batch-zero", [*CELL, "--set", "method.batch_size=0"], None, "greater than or equal to 1"),
    ("set-dead-key", [*CELL, "--set", "method.max_epochs=3"], None, "unknown option 'max_epochs'"),
    ("set-unknown-part", [*CELL[:2], "ucdr_adapter", *CELL[3:], "--set", "method.phases.phase1.trains=[tpgx]"], None,
     "'phases.phase1.trains.0'"),
    ("max-steps-negative", [*CELL, "--max-steps", "-5"], None, "--max-steps must be >= 1, got -5"),
    ("max-steps-zero", [*CELL, "--max-steps", "0"], None, "--max-steps must be >= 1"),
    ("budget-unknown", [*CELL, "--budget", "epochs:3"], None, "unknown budget policy 'epochs'"),
    ("budget-and-max-steps", [*CELL, "--budget", "paper", "--max-steps", "3"], None, "not both"),
    ("json-without-dry-run", [*CELL, "--json"], None, "--json goes with --dry-run"),
    ("suite-seeds-string", SUITE, SMOKE.replace("seeds: [0]", 'seeds: "0,1"'), "bad value for 'seeds'"),
    ("suite-seeds-int", SUITE, SMOKE.replace("seeds: [0]", "seeds: 1"), "bad value for 'seeds'"),
    ("suite-seeds-negative", SUITE, SMOKE.replace("seeds: [0]", "seeds: [-1]"), "'seeds.0'"),
    ("suite-max-steps", SUITE, SMOKE.replace("budget: {policy: steps, steps: 2}", "max_steps: eight"),
     "'max_steps' is no longer a suite key"),
    ("suite-budget-not-a-number", SUITE, SMOKE.replace("steps: 2}", "steps: eight}"), "'eight'"),
    ("suite-no-budget", SUITE, SMOKE.replace("budget: {policy: steps, steps: 2}", ""), "'budget'"),
    ("suite-unknown-method-option", SUITE, SMOKE.replace("method: {batch_size: 8}", "method: {batch_sise: 8}"),
     "unknown option 'batch_sise' for method"),
    ("suite-unknown-key", SUITE, SMOKE + "epochs: 3\n", "unknown option 'epochs' for suite"),
    ("suite-set", [*SUITE, "--set", "method.batch_size=8"], SMOKE, "--set applies to one cell"),
]


def fill(arg: str, **paths: Path) -> str:
    """`{root}`-style placeholders replaced (str.format would trip on YAML braces such as {lr: fast})."""
    for key, value in paths.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg


@pytest.mark.parametrize(("args", "suite", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_configuration_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, suite, fragment):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    suite_path = tmp_path / "suite.yaml"
    if suite is not None:
        suite_path.write_text(suite, encoding="utf-8")
    out = tmp_path / "out"
    argv = [fill(a, root=tmp_path / "no-data-needed", out=out, suite=suite_path) for a in args]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("xbench: error: ") and "\n" not in err, err
    assert fragment in err, err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_the_same_cell_with_a_fixed_option_passes_the_check(tmp_path, monkeypatch, capsys):
    """The check rejects the typo, not the command: corrected, it reaches the data (and fails there only
    because this test gives no data root)."""
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    rc = main([fill(a, root=tmp_path / "no-data", out=tmp_path / "out") for a in CELL]
              + ["--set", "method.optimizer.lr=1e-3", "--max-steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "optimizer" not in err and str(Path(tmp_path / "no-data")) in err
