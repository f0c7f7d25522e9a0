"""Deterministic directory listing (PROTOCOLS.md §1.2 listing rule) and canonical listing hashes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_LISTED = 10


def short_list(items: Sequence[str]) -> str:
    """`a, b, c` (first few) plus how many more: error messages stay one line."""
    head = ", ".join(items[:MAX_LISTED])
    return head + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def utf8_name(folder: str | Path, name: str) -> str:
    """`name` unchanged when it is valid UTF-8; otherwise a one-line DataError naming the entry.

    On POSIX, Python keeps undecodable bytes of a file name as lone surrogates; such a name cannot be
    written to a UTF-8 manifest, so the tree is refused with the raw bytes shown."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        where = os.fsencode(str(folder)).decode("utf-8", "backslashreplace")
        raise DataError(f"{where}: entry {raw!r} has a name that is not valid UTF-8; rename it to UTF-8 "
                        "(e.g. `convmv -f latin1 -t utf8 --notest -r FOLDER`) or move it out of the dataset "
                        "tree") from None
    return name


def scandir_names(folder: str | Path) -> list[os.DirEntry]:
    """The entries of `folder`, every name checked to be UTF-8 (hidden ones included)."""
    with os.scandir(folder) as it:
        entries = list(it)
    for entry in entries:
        utf8_name(folder, entry.name)
    return entries


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[str]:
    """Names of regular image files directly inside `folder`, sorted by code point; [] if absent."""
    if not folder.is_dir():
        return []
    return sorted(e.name for e in scandir_names(folder) if e.is_file() and is_image_name(e.name))


def list_subdirs(folder: Path) -> list[str]:
    """Sorted names of non-hidden sub-directories of `folder`."""
    if not folder.is_dir():
        return []
    return sorted(e.name for e in scandir_names(folder) if e.is_dir() and not e.name.startswith("."))


def listing_sha256(relpaths: Iterable[str]) -> str:
    """SHA-256 of the newline-joined sorted relpaths: two equal hashes mean the same tree.

    Callers pass canonical relpaths (the forms a manifest holds), so the hash does not depend on
    which of the accepted layouts the tree is stored in."""
    joined = "\n".join(sorted(set(relpaths)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()
