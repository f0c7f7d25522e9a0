"""`make bench`'s runner (benchmarks/run_all.py) on stand-in benchmark scripts: the RESULT line is parsed, each
stated target is judged, one JSON per benchmark is written, and a failing or silent benchmark is reported."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

RUN_ALL = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


def load_run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_targets_are_judged_and_written_per_benchmark(tmp_path, capsys):
    ra = load_run_all()
    fake = script(tmp_path, "fake.py", "print('warming up')\nprint('RESULT speed=12.5 diff=2e-9 extra=1')\n")
    bench = ra.Bench("fake", [fake], {"speed": (">=", 10.0), "diff": ("<=", 1e-9), "absent": (">=", 1.0)})
    record = ra.run(bench, tmp_path / "results")
    assert record["result"] == {"speed": 12.5, "diff": 2e-9, "extra": 1.0} and record["returncode"] == 0
    assert {k: t["holds"] for k, t in record["targets"].items()} == {"speed": True, "diff": False, "absent": False}
    assert record["ok"] is False
    assert json.loads((tmp_path / "results" / "fake.json").read_text()) == record
    rows = ra.summary([record])
    assert rows == ["fake                     speed = 12.5 (target >= 10): holds",
                    "fake                     diff = 2e-09 (target <= 1e-09): FALLS SHORT",
                    "fake                     absent = missing (target >= 1): FALLS SHORT"]
    assert "warming up" in capsys.readouterr().out  # the benchmark's output is shown as it runs


def test_a_failing_or_silent_benchmark_is_not_ok(tmp_path):
    ra = load_run_all()
    crash = ra.run(ra.Bench("crash", [script(tmp_path, "crash.py", "print('RESULT x=1')\nraise SystemExit(3)\n")]),
                   tmp_path / "results")
    silent = ra.run(ra.Bench("silent", [script(tmp_path, "silent.py", "print('no result line')\n")]),
                    tmp_path / "results")
    assert (crash["ok"], crash["returncode"], crash["result"]) == (False, 3, {"x": 1.0})
    assert (silent["ok"], silent["returncode"], silent["result"]) == (False, 0, None)
    assert ra.summary([crash, silent]) == ["crash                    FAILED (exit 3)",
                                           "silent                   FAILED (exit 0, no RESULT line)"]
    plain = ra.run(ra.Bench("plain", [script(tmp_path, "plain.py", "print('RESULT y=2')\n")]), tmp_path / "results")
    assert plain["ok"] is True and ra.summary([plain]) == ["plain                    no stated target; y=2"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["crash.json", "plain.json", "silent.json"]
