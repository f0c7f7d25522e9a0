"""Helpers shared by `xbench data verify` and the DataModule: image checks, count comparisons."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DataError
from .images import load_image


def _check_one(path: Path) -> str | None:
    try:
        load_image(path)
    except DataError as exc:
        return str(exc)
    return None


def find_bad_images(paths: Iterable[Path], workers: int | None = None) -> list[tuple[Path, str]]:
    """Fully decode every image; return (path, reason) for the missing, empty or unreadable ones."""
    paths = list(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 64:
        results = [_check_one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_check_one, paths))
    return [(p, r) for p, r in zip(paths, results) if r is not None]


def compare_counts(found: Mapping[str, int], expected: Mapping[str, int], where: str, source: str) -> list[str]:
    """One problem line per key whose count differs from the expected one."""
    problems = []
    for key in sorted(set(expected) | set(found)):
        want, got = expected.get(key), found.get(key, 0)
        if want is not None and int(want) != int(got):
            problems.append(f"{where}: {key} has {got} images, {source} expects {want}")
    return problems
