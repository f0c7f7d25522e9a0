"""Fault matrix for the runner, the golden files and the leaderboard (issue 17), tried as a user would hit them.

Each row: a set-up -> the `xbench` command -> exit 2 -> one `xbench: error:` line holding the fragment ->
nothing left behind (no output folder, no leaderboard files, no temporary files). Then the claims that keep
two runners apart: a cell another process holds is skipped and reported, a claim whose holder was killed is
taken over, and an `ok` record is never replaced by a failed one.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from xdomain_bench.cli import main
from xdomain_bench.runner.claims import claim_cell, claim_paths
from xdomain_bench.runner.execute import run_cell
from xdomain_bench.runner.records import Cell, record_path

CELL = ["run", "--method", "zero_shot", "--dataset", "cub", "--data-root", "{root}", "--out", "{out}", "--no-progress"]
SUITE = ["run", "--suite", "{suite}", "--data-root", "{root}", "--out", "{out}", "--no-progress"]
SUITE_TEXT = """name: faults
backbone: tiny-clip
seeds: [0]
budget: {policy: steps, steps: 2}
methods: [zero_shot]
variants: [clean]
datasets:
  DATASET:
    protocols:
      PROTOCOL: {}
"""
HEADER = "method,dataset,protocol,variant,query_domain,gallery,seed,metric,value\n"
ROW = "coop,cub,fgir_open,clean,photo,photo,{seed},MAP@R,{value}\n"
GOLDEN = ["regress", "{out}", "--against", "{golden}"]


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> Path:
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("cub_only")
    get_dataset("cub").synth(root, scale="tiny", seed=0)
    return root


@pytest.fixture(autouse=True)
def _offline(monkeypatch):  # with the per-test caches of conftest.py
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into: a read-only tmpfs where this process may mount one (root in a
    container), else a folder without write permission (a non-root user)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root without the right to mount: no way to make a read-only folder")
        folder.chmod(0o555)
    yield folder
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o755)


def suite_for(dataset: str, protocol: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        text = SUITE_TEXT.replace("DATASET", dataset).replace("PROTOCOL", protocol)
        (tmp / "suite.yaml").write_text(text, encoding="utf-8")
    return write


def golden(text: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        (tmp / "out" / "records").mkdir(parents=True)
        (tmp / "golden.csv").write_text(text, encoding="utf-8")
    return write


def a_file(rel: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / rel).write_text("keep me\n", encoding="utf-8")


def records_folder(tmp: Path) -> None:
    (tmp / "out" / "records").mkdir(parents=True)


CASES = [
    # (id, set-up, arguments, {placeholder: path relative to tmp_path}, fragment)
    ("out-is-a-file", a_file("taken"), CELL, {"out": "taken"}, "--out {tmp}/taken is a file, not a folder"),
    ("out-below-a-file", a_file("taken"), CELL, {"out": "taken/run"}, "cannot be created: {tmp}/taken is a file"),
    ("suite-out-is-a-file", lambda t: (suite_for("cub", "fgir_open")(t), a_file("taken")(t)), SUITE,
     {"out": "taken"}, "is a file, not a folder"),
    ("data-root-missing", suite_for("cub", "fgir_open"), SUITE, {"root": "nowhere"}, "data root does not exist"),
    ("dataset-folder-missing", suite_for("domainnet", "ucdr"), SUITE, {}, "no DomainNet/ folder under"),
    ("backbone-unknown", None, [*CELL, "--backbone", "clip-xl"], {}, "unknown backbone spec 'clip-xl'"),
    ("backbone-dir-missing", None, [*CELL, "--backbone", "hf-clip:/nonexistent/clip"], {},
     "checkpoint directory not found: /nonexistent/clip"),
    ("backbone-hub-not-cached", None, [*CELL, "--backbone", "hf-clip:openai/clip-vit-base-patch16"], {},
     "are not in the local Hugging Face cache"),
    ("golden-empty", golden(""), GOLDEN, {}, "golden file {tmp}/golden.csv is empty"),
    ("golden-header-only", golden(HEADER), GOLDEN, {}, "has a header but no rows"),
    ("golden-value-not-a-number", golden(HEADER + ROW.format(seed=0, value="high")), GOLDEN, {},
     "line 2: value 'high' (coop MAP@R) is not a number"),
    ("golden-value-empty", golden(HEADER + ROW.format(seed=0, value="0.5") + ROW.format(seed=1, value="")), GOLDEN,
     {}, "line 3: value '' (coop MAP@R) is not a number"),
    ("golden-seed-not-an-integer", golden(HEADER + ROW.format(seed="0.5", value="0.5")), GOLDEN, {},
     "line 2: seed '0.5' (coop MAP@R) is not an integer"),
    ("golden-extra-field", golden(HEADER + ROW.format(seed=0, value="0.5").rstrip("\n") + ",extra\n"), GOLDEN, {},
     "line 2 has 10 fields, the header 9"),
    ("leaderboard-no-records", records_folder, ["leaderboard", "{out}"], {}, "no records in {tmp}/out/records"),
]


def fill(args: list[str], tmp: Path, root: Path, where: dict[str, str]) -> list[str]:
    paths = {"root": root, "out": tmp / "out", "suite": tmp / "suite.yaml", "golden": tmp / "golden.csv"}
    paths.update({k: tmp / v for k, v in where.items()})
    out = []
    for arg in args:
        for key, value in paths.items():
            arg = arg.replace("{" + key + "}", str(value))
        out.append(arg)
    return out


def snapshot(tmp: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("setup", "args", "where", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_run_is_one_line_and_leaves_nothing(tmp_path, cub_root, capsys, setup, args, where, fragment):
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path)
    rc = main(fill(args, tmp_path, cub_root, where))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("xbench: error: ") and "\n" not in err, err
    assert fragment.replace("{tmp}", str(tmp_path)) in err, err
    assert snapshot(tmp_path) == before  # nothing written, nothing changed (no temporary files either)
    assert not (tmp_path / "cache").exists()  # and nothing computed


def test_out_on_a_read_only_folder_fails_before_any_compute(read_only_dir, tmp_path, cub_root, capsys):
    out = read_only_dir / "run"
    rc = main(fill(CELL, tmp_path, cub_root, {"out": "ro/run"}))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("xbench: error: ") and "\n" not in err, err
    assert f"--out {out} is not writable" in err, err
    assert not out.exists() and not (tmp_path / "cache").exists()  # failed before data, backbone or training


# --- claims ------------------------------------------------------------------------------------------------
HOLD = """
import os, signal, sys
from xdomain_bench.runner.claims import claim_cell
with claim_cell(sys.argv[1], sys.argv[2]) as claim:
    assert claim.held
    print("held", flush=True)
    if sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()  # hold until the test closes stdin
"""


def hold_claim(out: Path, slug: str, mode: str = "hold") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), slug, mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


ZS = Cell(method="zero_shot", dataset="cub", protocol="fgir_open", budget="steps:2")


def test_a_cell_another_runner_holds_is_skipped_and_reported(tmp_path, cub_root, capsys):
    out = tmp_path / "out"
    holder = hold_claim(out, ZS.slug())
    try:
        suite_for("cub", "fgir_open")(tmp_path)
        rc = main(fill(SUITE, tmp_path, cub_root, {}))
        console = " ".join(capsys.readouterr().out.split())
        assert rc == 0
        assert f"claimed by pid {holder.pid} on" in console and "1 left to the runners that hold them" in console
        assert not record_path(out, ZS).exists() and not (out / "checkpoints").exists()  # the holder's to touch
        rc = main(fill([*CELL, "--max-steps", "2"], tmp_path, cub_root, {}))  # one cell: an error naming the holder
        assert rc == 2 and f"claimed by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    assert main(fill(SUITE, tmp_path, cub_root, {})) == 0  # released: now it runs
    assert json.loads(record_path(out, ZS).read_text())["status"] == "ok"


def test_a_claim_whose_holder_was_killed_is_taken_over(tmp_path):
    out = tmp_path / "out"
    killed = subprocess.Popen([sys.executable, "-c", HOLD, str(out), ZS.slug(), "die"], stdout=subprocess.PIPE,
                              text=True)
    killed.communicate()
    assert killed.returncode == -9
    _, holder_file = claim_paths(out, ZS.slug())
    assert json.loads(holder_file.read_text())["pid"] == killed.pid  # the dead holder's record is still there
    with claim_cell(out, ZS.slug()) as claim:
        assert claim.held and claim.stale["pid"] == killed.pid
        assert json.loads(holder_file.read_text())["pid"] == os.getpid()
    assert not holder_file.parent.exists()  # released: no lock, holder record or claims/ folder left


def test_an_ok_record_is_never_replaced_by_a_failed_one(tmp_path, cub_root):
    out = tmp_path / "out"
    first = run_cell(ZS, cub_root, out, progress=False)
    assert first["status"] == "ok"
    again = run_cell(ZS, tmp_path / "no-data", out, progress=False)  # the same cell, now failing
    assert again["status"] == "failed"
    assert json.loads(record_path(out, ZS).read_text()) == json.loads(json.dumps(first, default=str))


def test_a_runner_that_wins_the_claim_of_a_finished_cell_does_not_run_it_again(tmp_path, cub_root):
    out = tmp_path / "out"
    first = run_cell(ZS, cub_root, out, progress=False)
    again = run_cell(ZS, tmp_path / "no-data", out, progress=False, skip_done=True)  # would fail if it ran
    assert again["status"] == "done" and again["metrics"] == first["metrics"]


def test_an_unwritable_out_names_the_reason(tmp_path, monkeypatch, cub_root, capsys):
    """A write that fails for another reason than permissions (a full disk) is reported with that reason."""
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("tempfile.mkstemp", full)
    assert main(fill(CELL, tmp_path, cub_root, {})) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "No space left on device" in err and not (tmp_path / "out").exists()


def test_a_lock_that_fails_without_a_recorded_holder_is_tried_again(tmp_path, monkeypatch):
    """The claims/ folder can vanish between our mkdir and our lock (another runner's last claim out), which
    filelock reports as a timeout. With no holder recorded that is no claim by anyone: try again."""
    from filelock import FileLock, Timeout

    real = FileLock.acquire
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise Timeout(self.lock_file)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FileLock, "acquire", flaky)
    with claim_cell(tmp_path / "out", "cell") as claim:
        assert claim.held and len(calls) == 2
    assert not (tmp_path / "out" / "claims").exists()


def test_a_live_holder_is_reported_after_the_retries(tmp_path):
    out = tmp_path / "out"
    holder = hold_claim(out, "cell")
    try:
        with claim_cell(out, "cell") as claim:
            assert not claim.held and claim.holder["pid"] == holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
