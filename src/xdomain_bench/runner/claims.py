"""Per-cell claims: runners that share an output folder never work on the same cell at once.

A runner claims a cell before it touches the cell's checkpoints or record, with a `filelock` lock on
`OUT/claims/<cell slug>.lock` tried once, without waiting. The lock is an flock: the kernel drops it when
the holder exits, however it dies (SIGKILL included), so a killed runner never leaves a claim that blocks;
on a filesystem without flock, filelock falls back to its soft lock, which recovers from dead holders by
their pid and host. Next to the lock, `<slug>.holder.json` names the holder (pid, host, start, command),
so that a runner that finds the cell claimed can say by whom; it is removed on release, so one still there
when a claim is won was left by a holder that died, and is reported as such.

A SLURM or other launcher claims cells through `claim_cell` just the same. The holder removes the lock file
before it lets go of the lock (filelock sees an unlinked inode and tries again), and the last one out removes
the `claims/` folder, so a run leaves nothing behind but its results.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..io_utils import atomic_write_json

CLAIMS_DIR = "claims"
ATTEMPTS, RETRY_S = 8, 0.05  # tries at a claim whose holder is not recorded, and the pause between them


@dataclass
class Claim:
    """The outcome of trying to claim a cell: `held` by us, else `holder` (who has it, when known).
    `stale` is the holder record a killed runner left behind, when we took over its cell."""

    slug: str
    held: bool
    holder: dict[str, Any] | None = None
    stale: dict[str, Any] | None = None

    def describe_holder(self) -> str:
        return describe(self.holder) if self.holder else "another runner (holder not recorded yet)"


def describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
            f"({holder.get('command') or 'unknown command'})")


def this_runner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(["xbench", *sys.argv[1:]])}


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def claim_paths(out_dir: str | Path, slug: str) -> tuple[Path, Path]:
    folder = Path(out_dir) / CLAIMS_DIR
    return folder / f"{slug}.lock", folder / f"{slug}.holder.json"


@contextmanager
def claim_cell(out_dir: str | Path, slug: str) -> Iterator[Claim]:
    """Try once to claim the cell `slug` under `out_dir`; yields a Claim (check `.held`). Released on exit."""
    lock_path, holder_path = claim_paths(out_dir, slug)
    lock = FileLock(str(lock_path))
    for attempt in range(ATTEMPTS):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(blocking=False)
            break
        except Timeout:
            # A holder records itself right after it wins the lock. With no record, the failure can also be
            # the claims/ folder vanishing under us (another runner's last claim out): look again shortly.
            holder = _read_holder(holder_path)
            if holder is not None or attempt == ATTEMPTS - 1:
                yield Claim(slug, held=False, holder=holder)
                return
        except FileNotFoundError:  # the folder went away with another runner's last claim: make it again
            if attempt == ATTEMPTS - 1:
                raise
        time.sleep(RETRY_S)
    try:
        stale = _read_holder(holder_path)  # left by a holder that died holding the claim
        atomic_write_json(holder_path, this_runner())
        yield Claim(slug, held=True, stale=stale)
    finally:
        holder_path.unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)  # while held: a peer that opened this inode sees it unlinked and retries
        lock.release()
        try:
            lock_path.parent.rmdir()  # the last claim out leaves no claims/ folder behind
        except OSError:
            pass
