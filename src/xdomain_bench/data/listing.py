"""Deterministic directory listing (PROTOCOLS.md §1.2 listing rule)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder: Path) -> list[str]:
    """Names of regular image files directly inside `folder`, sorted by code point; [] if absent."""
    if not folder.is_dir():
        return []
    names = [
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(names)


def list_subdirs(folder: Path) -> list[str]:
    """Sorted names of non-hidden sub-directories of `folder`."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def listing_sha256(relpaths: Iterable[str]) -> str:
    """SHA-256 of the newline-joined sorted relpaths: two equal hashes mean the same tree."""
    joined = "\n".join(sorted(set(relpaths)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()
