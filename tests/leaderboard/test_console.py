"""Console tables piped (CI logs, `| cat`): never cut, at natural width or at a narrow `--width`."""

from __future__ import annotations

import os
import subprocess
import sys

from rich.cells import cell_len

from xdomain_bench.cli import main

FULL_TEXTS = ["R@1 (%)", "mAP@all (0–1)", "MAP@R (0–1)", "i2t_R@10 (%)", "t2i_R@10 (%)", "RSUM (sum of %)",
              "Prec@200 (0–1)", "tiny-clip:seed=1", "test-selected", "n/a (needs captions)",
              "maple [reported; not implemented here]", "52.00* ± 2.83 (2)", "0.3100* ± 0.0141 (2)", "+0.0165",
              "250.00* ± — (1)", "clean · average2"]


def _xbench(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run([sys.executable, "-m", "xdomain_bench.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)  # stdout is a pipe, as in CI logs and `| cat`


def test_piped_tables_show_every_name_and_value_in_full(scenario):
    out, reported = scenario
    proc = _xbench("leaderboard", str(out), "--reported", str(reported), "--format", "md")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "…" not in text
    for needle in FULL_TEXTS:
        assert needle in text, needle
    row = next(line for line in text.splitlines() if "│ coop" in line and "matched:2560" in line)
    assert "52.00* ± 2.83 (2)" in row and "0.2600* ± 0.0141 (2)" in row  # a whole row on one line
    assert max(cell_len(line) for line in text.splitlines()) > 200  # not squeezed into 80 columns


def test_narrow_width_splits_or_stacks_but_never_cuts(scenario):
    out, reported = scenario
    proc = _xbench("leaderboard", str(out), "--reported", str(reported), "--format", "md", "--width", "60")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(cell_len(line.rstrip()) for line in lines) <= 60
    assert "…" not in proc.stdout
    for needle in FULL_TEXTS:
        assert needle in proc.stdout, needle
    assert "domainnet / ucdr (part 1 of 2)" in proc.stdout  # columns continue in a second part
    assert "  R@1 (%): 52.00* ± 2.83 (2)" in lines  # CUB's identity columns leave no room: one value a line


def test_regress_table_is_not_cut_when_piped(scenario, tmp_path):
    out, _ = scenario
    golden = tmp_path / "a_rather_long_folder_name_for_golden_files" / "golden_with_a_long_name.csv"
    golden.parent.mkdir()
    golden.write_text("method,dataset,protocol,variant,query_domain,gallery,seed,metric,value\n"
                      "linear_probe,cub,fgir_open,clean,photo,photo,0,R-Precision_at_some_long_name,0.5\n"
                      "linear_probe,cub,fgir_open,clean,photo,photo,0,mAP@all,0.4\n")
    proc = _xbench("regress", str(out), "--against", str(golden))
    assert proc.returncode == 1
    text = proc.stdout
    assert "…" not in text and str(golden) in text
    assert "R-Precision_at_some_long_name" in text and "query_domain" in text and "+0.2000" in text
    narrow = _xbench("regress", str(out), "--against", str(golden), "--width", "50")
    assert narrow.returncode == 1 and "…" not in narrow.stdout
    assert max(cell_len(line.rstrip()) for line in narrow.stdout.splitlines()) <= 50
    lines = narrow.stdout.splitlines()
    assert "  metric: R-Precision_at_some_long_name" in lines and "  delta: +0.2000" in lines  # one value a line


def test_bad_format_or_width_is_one_clear_error(scenario, capsys):
    out, reported = scenario
    assert main(["leaderboard", str(out), "--format", "csv,pdf"]) == 2
    assert capsys.readouterr().err == ("xbench: error: unknown --format pdf; choose from csv, md, latex, json "
                                       "(comma-separated, e.g. --format csv,latex)\n")
    assert main(["leaderboard", str(out), "--width", "8"]) == 2
    assert "--width 8 is too narrow; give at least 20 characters" in capsys.readouterr().err
    assert not list(out.glob("leaderboard*"))
