"""Atomic writes: the umask's mode (not mkstemp's 0600), fsync before the rename, nothing half-written."""

from __future__ import annotations

import os

import pytest

from xdomain_bench import io_utils


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_take_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io_utils.atomic_write_text(tmp_path / "a" / "new.txt", "x\n")
        io_utils.atomic_write_json(tmp_path / "rec.json", {"k": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "new.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "rec.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a" / "new.txt").read_text() == "x\n"


def test_file_is_synced_before_it_is_renamed(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(io_utils.os, "fsync", fsync)
    monkeypatch.setattr(io_utils.os, "replace", replace)
    io_utils.atomic_write_text(tmp_path / "out.csv", "a,b\n")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"]  # the file, the rename, then its folder
    assert events[0][1].startswith(".out.csv.") and events[1][1] == "out.csv" and events[2][1] == tmp_path.name


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "board.md"
    target.write_text("old\n")

    def broken(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io_utils.atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.md"]
