"""Fault matrix for bad data and backbone input, tried as a user would hit them.

Each row: a broken tree or backbone -> the `xbench` command -> exit code 2 -> one `xbench: error:` line
holding the fragment -> nothing written under the output paths (and no temporary files anywhere).
The cases that must succeed instead (the option named in an error message, warnings that must not
block) follow the table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xdomain_bench.cli import main

SPLITS = Path(__file__).resolve().parents[2] / "datasets" / "splits"
DN_TEST = (SPLITS / "domainnet_test_classes.txt").read_text(encoding="utf-8").splitlines()
PROTOCOL = {"domainnet": "ucdr", "sketchy": "uccdr_eccv21", "tuberlin": "uccdr_random30", "cub": "fgir_open",
            "fdrd": "itr"}
BAD_NAME = b"caf\xe9.png"  # Latin-1 bytes: not UTF-8
RUN = ["run", "--method", "zero_shot", "--dataset", "domainnet", "--data-root", "{root}", "--holdout", "sketch",
       "--backbone", "tiny-clip", "--out", "{out}"]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """Tiny synthetic trees of every dataset in their official layouts (copied before any change)."""
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("pristine")
    for name in PROTOCOL:
        get_dataset(name).synth(root, scale="tiny", seed=0)
    return root


def first_folder(path: Path) -> Path:
    return sorted(p for p in path.iterdir() if p.is_dir())[0]


def plant_bad_name(folder: Path) -> None:
    with open(os.fsencode(folder) + b"/" + BAD_NAME, "wb") as f:
        f.write(b"x")


NAME_FOLDER: dict[str, Callable[[Path], Path]] = {
    "domainnet": lambda r: r / "DomainNet" / "sketch" / DN_TEST[0],
    "sketchy": lambda r: first_folder(r / "Sketchy" / "sketch"),
    "tuberlin": lambda r: first_folder(r / "TUBerlin" / "sketches"),
    "cub": lambda r: first_folder(r / "CUB_200_2011" / "images"),
    "fdrd": lambda r: r / "oxford_pets" / "images",
}


def break_names(dataset: str) -> Callable[[Path], None]:
    return lambda root: plant_bad_name(NAME_FOLDER[dataset](root))


def remove(rel: str) -> Callable[[Path], None]:
    return lambda root: shutil.rmtree(root / rel)


def empty_first_image(rel: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        sorted((root / rel).iterdir())[0].write_bytes(b"")
    return change


def checkpoint_without_tokenizer(root: Path) -> None:
    from xdomain_bench.vlm.backends import TINY_DEFAULTS, build_seeded_clip

    model, _ = build_seeded_clip(dict(TINY_DEFAULTS))
    model.save_pretrained(root.parent / "ckpt")


@dataclass
class Case:
    id: str
    argv: list[str]
    fragment: str
    change: Callable[[Path], None] = lambda root: None
    env: dict[str, str] = field(default_factory=dict)  # set: run as a separate process with these variables
    untouched: tuple[str, ...] = ("out",)  # paths under tmp_path that must hold no file afterwards


def manifest_argv(dataset: str, *extra: str) -> list[str]:
    return ["data", "manifest", dataset, "--data-root", "{root}", "--protocol", PROTOCOL[dataset],
            "--out", "{out}/m.csv", *extra]


CASES = [
    *[Case(f"non-utf8-name-manifest-{d}", manifest_argv(d), "is not valid UTF-8", break_names(d)) for d in PROTOCOL],
    Case("non-utf8-name-verify", ["data", "verify", "sketchy", "--data-root", "{root}"], "is not valid UTF-8",
         break_names("sketchy")),
    Case("non-utf8-name-run", RUN, "is not valid UTF-8", break_names("domainnet"), untouched=("out", "cache")),
    Case("missing-class-run", RUN, f"sketch/{DN_TEST[1]}", remove(f"DomainNet/sketch/{DN_TEST[1]}"),
         untouched=("out", "cache")),
    Case("missing-domain-run", RUN, "missing domain folder", remove("DomainNet/infograph"),
         untouched=("out", "cache")),
    Case("missing-class-manifest", manifest_argv("sketchy"), "allow_missing_classes=true",
         lambda r: shutil.rmtree(first_folder(r / "Sketchy" / "extended_photo"))),
    Case("bad-image-run", RUN, "--set data.skip_bad_images=true",
         empty_first_image(f"DomainNet/sketch/{DN_TEST[0]}")),
    Case("missing-root-manifest", ["data", "manifest", "domainnet", "--data-root", "{root}/nowhere", "--protocol", "ucdr",
                                   "--out", "{out}/m.csv"], "data root does not exist"),
    Case("fdrd-annotations-missing", manifest_argv("fdrd", "--annotations", "{root}/nope.json"),
         "annotations not found"),
    Case("hub-id-not-cached-run", [*RUN[:-4], "--backbone", "hf-clip:openai/clip-vit-base-patch16", "--out", "{out}"],
         "`hf download openai/clip-vit-base-patch16`"),
    Case("hub-unreachable-run", [*RUN[:-4], "--backbone", "hf-clip:openai/clip-vit-base-patch16", "--out", "{out}",
                                 "--allow-download"],
         "the network or the Hugging Face hub is unreachable", env={"HF_HUB_OFFLINE": "0",
                                                                     "HF_ENDPOINT": "http://127.0.0.1:9"}),
    Case("checkpoint-without-tokenizer-run", [*RUN[:-4], "--backbone", "hf-clip:{root}/../ckpt", "--out", "{out}"],
         "tokenizer.json or vocab.json+merges.txt", checkpoint_without_tokenizer),
]


def run_xbench(argv: list[str], env: dict[str, str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of `xbench ARGV`: in this process, or in a fresh one when `env` is given."""
    if not env:
        rc = main(argv)
        return rc, capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "xdomain_bench.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    return proc.returncode, proc.stderr


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_leaves_nothing(case, synth_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    case.change(root)
    argv = [a.format(root=root, out=tmp_path / "out") for a in case.argv]
    rc, err = run_xbench(argv, case.env, capsys)
    errors = [line for line in err.splitlines() if line.startswith("xbench: error: ")]
    assert rc == 2, err
    assert len(errors) == 1 and case.fragment in errors[0], err
    assert "Traceback" not in err
    for rel in case.untouched:
        assert files_under(tmp_path / rel) == [], rel
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".part"))]


# --- what the messages promise works ---------------------------------------------------------------
def _record(out: Path) -> dict:
    (path,) = (out / "records").glob("*.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_allow_missing_classes_runs_and_marks_the_record_nonstandard(synth_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synth_root / "DomainNet", root / "DomainNet")
    shutil.rmtree(root / "DomainNet" / "sketch" / DN_TEST[1])
    argv = [a.format(root=root, out=tmp_path / "out") for a in RUN]
    assert main([*argv, "--set", "data.allow_missing_classes=true"]) == 0, capsys.readouterr().err
    record = _record(tmp_path / "out")
    assert record["status"] == "ok"
    assert record["notes"]["nonstandard"] is True and record["notes"]["missing_parts"] == [f"sketch/{DN_TEST[1]}"]


def test_skip_bad_images_option_named_in_the_message_works_with_run(synth_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synth_root / "DomainNet", root / "DomainNet")
    empty_first_image(f"DomainNet/sketch/{DN_TEST[0]}")(root)
    argv = [a.format(root=root, out=tmp_path / "out") for a in RUN]
    assert main([*argv, "--set", "data.skip_bad_images=true"]) == 0, capsys.readouterr().err
    assert _record(tmp_path / "out")["status"] == "ok"


def test_malformed_optional_split_file_only_warns(synth_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synth_root / "DomainNet", root / "DomainNet")
    (root / "DomainNet" / "real_test.txt").write_text("real/apple/x.jpg\n", encoding="utf-8")
    out = tmp_path / "out" / "m.csv"
    assert main([a.format(root=root, out=tmp_path / "out") for a in manifest_argv("domainnet")]) == 0
    assert out.is_file() and "real_test.txt:1: malformed split-file line" in capsys.readouterr().out


def test_verify_piped_prints_fdrd_warnings_on_whole_lines(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    junk = root / "FDRD" / ("a_file_with_a_deliberately_long_name_that_is_no_caption_file_" * 2 + ".json")
    junk.write_text("{}", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "xdomain_bench.cli", "data", "verify", "fdrd", "--data-root", str(root)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "80"})
    lines = proc.stdout.splitlines()
    warning = f"  - {junk}: not a released FDRD caption-file name; ignored"
    assert len(warning) > 80 and warning in lines, proc.stdout
