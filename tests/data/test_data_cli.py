"""`xbench data synth|manifest|verify` end to end through the real entry point."""

from __future__ import annotations

import json

import pandas as pd
from dn_fixture import TreeModel as T

from xdomain_bench.cli import main
from xdomain_bench.data.domainnet import SYNTH_SIDECAR
from xdomain_bench.data.manifest import read_manifest


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_synth_then_verify_and_a_planted_bad_image(tmp_path, capsys):
    root = tmp_path / "synth"
    rc, out, _ = run(capsys, "data", "synth", "domainnet", "--data-root", str(root), "--scale", "tiny")
    assert rc == 0 and "wrote synthetic domainnet" in out
    dn = root / "DomainNet"
    side = json.loads((dn / SYNTH_SIDECAR).read_text())
    assert sorted(p.name for p in dn.iterdir() if p.is_dir()) == T.DOMAINS
    assert sorted(p.name for p in (dn / "quickdraw").iterdir()) == sorted(T.ALL)
    n_files = sum(1 for p in dn.glob("*/*/*.jpg"))
    assert n_files == side["counts"]["total"] > 0
    rc, out, _ = run(capsys, "data", "verify", "domainnet", "--data-root", str(root))
    assert rc == 0 and "passed verification" in out
    # every protocol has rows at the tiny scale, quickdraw-holdout UdCDR (10 % draw) included
    for argv in (["--protocol", "ucdr", "--gallery", "mixed"], ["--protocol", "uccdr"],
                 ["--protocol", "udcdr", "--holdout", "quickdraw"]):
        out_csv = tmp_path / f"{argv[1]}.csv"
        assert run(capsys, "data", "manifest", "domainnet", "--data-root", str(root), *argv, "--out", str(out_csv))[0] == 0
        counts = read_manifest(out_csv).counts()
        assert all(counts[r] > 0 for r in ("train", "val_query", "val_gallery", "query", "gallery"))
    bad = next((dn / "sketch" / T.TRAIN[3]).iterdir())
    bad.write_bytes(b"")
    rc, out, _ = run(capsys, "data", "verify", "domainnet", "--data-root", str(root))
    assert rc == 1 and f"zero-byte image: {bad}" in out.replace("\n", "")
    rc, out, _ = run(capsys, "data", "verify", "domainnet", "--data-root", str(root), "--skip-bad-images")
    assert rc == 0 and "bad_images" in out
    rc, _, err = run(capsys, "data", "synth", "domainnet", "--data-root", str(root), "--seed", "1")
    assert rc == 2 and "already exists" in err


def test_manifest_command_forwards_options(sparse_root, tmp_path, capsys):
    out_csv = tmp_path / "out" / "m.csv"
    rc, out, _ = run(capsys, "data", "manifest", "domainnet", "--data-root", str(sparse_root), "--protocol", "uccdr",
                     "--variant", "paper", "--paper-profile", "pros", "--holdout", "clipart", "--gallery", "mixed",
                     "--set", "data.seen=sketch", "--out", str(out_csv))
    assert rc == 0 and "val_query" in out
    m = read_manifest(out_csv)
    assert m.meta["options"] == {"gallery": "mixed", "seen": "sketch", "paper_profile": "pros"}
    assert set(m.role("query")["domain"]) == {"sketch"} and m.meta["setting"] == "holdout-clipart_seen-sketch"
    raw = pd.read_csv(out_csv)
    assert list(raw.columns) == ["relpath", "class_name", "class_id", "domain", "role"]


def _one_line_error(capsys, *argv: str) -> str:
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xbench: error: ")
    return lines[0]


def test_broken_inputs_give_one_line_and_no_manifest(sparse_root, tmp_path, capsys):
    out_csv = tmp_path / "m.csv"
    base = ["data", "manifest", "domainnet", "--protocol", "ucdr", "--out", str(out_csv)]
    err = _one_line_error(capsys, *base, "--data-root", str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in err
    split = sparse_root / "DomainNet" / "real_test.txt"
    split.write_text(f"real/{T.TEST[0]}/real_300_000000.png 300\nreal/{T.TEST[0]}/real_300_000001.png\n")
    ok_csv = tmp_path / "ok" / "ok.csv"
    rc, out, _ = run(capsys, *base[:-1], str(ok_csv), "--data-root", str(sparse_root))
    assert rc == 0 and ok_csv.is_file()  # the optional split files are only cross-checked: a warning
    assert "real_test.txt:2: malformed split-file line" in out.replace("\n", "")
    split.unlink()
    (sparse_root / "DomainNet" / "painting").rename(sparse_root / "DomainNet" / "paintings")
    err = _one_line_error(capsys, *base, "--data-root", str(sparse_root))
    assert f"missing domain folder {sparse_root / 'DomainNet' / 'painting'}" in err
    err = _one_line_error(capsys, *base, "--data-root", str(sparse_root), "--annotations", "boxes.txt")
    assert "takes no option 'annotations'" in err
    assert not list(tmp_path.glob("m*"))  # nothing half-written
    err = _one_line_error(capsys, "data", "verify", "no_such_set", "--data-root", str(sparse_root))
    assert "unknown dataset 'no_such_set'; known datasets:" in err and "domainnet" in err


def test_verify_reports_missing_domain_as_problem(sparse_root, capsys):
    (sparse_root / "DomainNet" / "quickdraw").rename(sparse_root / "DomainNet" / "qd")
    rc, out, _ = run(capsys, "data", "verify", "domainnet", "--data-root", str(sparse_root))
    assert rc == 1 and "missing domain folder" in out and "expects 48129" in out.replace("\n", "")
