"""Checks before any compute: a run that cannot write its results, find its data or load its backbone fails
in one line before a cell is trained, not after. (The suite and every cell's config are validated when the
suite is expanded, runner/suite.py.)"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import BackboneError, ConfigError


def check_out_dir(out: str | Path, flag: str = "--out") -> None:
    """`out` is a folder this process can write into, or can be created; nothing is created here."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {out} is a file, not a folder; pass a folder (it is created when missing)")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {out} cannot be created: {probe} is a file, not a folder")
    try:  # a real write: permission bits do not show a read-only mount to root, nor an ACL
        fd, tmp = tempfile.mkstemp(prefix=".xbench-preflight.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        where = "" if probe == path else f" (tried in {probe}, its nearest existing folder)"
        raise ConfigError(f"{flag} {out} is not writable{where}: {why}; pass a folder you can write to") from None


def check_data_root(root: str | Path, datasets: Iterable[str]) -> None:
    """The data root exists and holds a folder for every dataset the run needs."""
    from ..data.base import get_dataset

    for name in sorted(set(datasets)):
        get_dataset(name).dataset_dir(root)  # one DataError naming the root or the missing folder


def check_backbones(specs: Iterable[str], allow_download: bool = False) -> None:
    """Every backbone spec names a known backend with valid options and, for hf-clip, a checkpoint folder or a
    cached (or, with --allow-download, downloadable) hub snapshot. Nothing heavy is loaded or pretrained."""
    from ..vlm import hf_clip
    from ..vlm.backends import BACKENDS, load_backbone
    from ..vlm.demo_clip import parse_demo_spec

    for spec in sorted(set(specs)):
        backend, _, arg = spec.partition(":")
        if backend == "hf-clip" and arg and hf_clip._looks_like_path(arg):
            hf_clip.check_checkpoint_dir(Path(arg).expanduser().resolve())
        elif backend == "hf-clip" and arg:
            root = hf_clip.resolve_hub_snapshot(arg, allow_download)
            hf_clip.check_checkpoint_dir(root, what=f"the cached snapshot of '{arg}'")
        elif backend == "demo-clip":
            parse_demo_spec(arg)  # pretrained (and cached) by the first cell that needs it
        elif backend in BACKENDS or backend == "hf-clip":
            load_backbone(spec, allow_download=allow_download)  # tiny-clip: small and seeded
        else:
            raise BackboneError(f"unknown backbone spec '{spec}'; use one of: tiny-clip, demo-clip, "
                                "hf-clip:<hub id>, hf-clip:/path/to/dir")


def preflight(cells: list, data_root: str | Path, out: str | Path, allow_download: bool = False) -> None:
    check_out_dir(out)
    check_data_root(data_root, [c.dataset for c in cells])
    check_backbones([c.backbone for c in cells], allow_download)

