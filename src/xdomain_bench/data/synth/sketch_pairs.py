"""Synthetic sketch/photo class-folder trees (Sketchy, TU-Berlin layouts) and the synthetic-tree marker.

A synthetic tree is written into a temporary sibling folder and moved into place only when complete,
so an interrupted `synth` never leaves a half-written dataset behind. The marker file
`.xbench_synth.json` records the tree's own expected counts; `verify` checks against those.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConfigError, DataError
from .objects import ObjectSpec, class_specs, render

SYNTH_MARKER = ".xbench_synth.json"
SCALES = ("tiny", "small")
IMAGE_SIZE = 64


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ConfigError(f"unknown synthetic scale '{scale}'; known scales: {', '.join(SCALES)}")


def read_synth_marker(dataset_dir: Path) -> dict[str, Any] | None:
    """The marker of a synthetic tree, or None for a real one."""
    path = Path(dataset_dir) / SYNTH_MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed synthetic-tree marker ({exc}); "
                        "delete the folder and run `xbench data synth` again") from None


def write_synth_marker(dataset_dir: Path, info: Mapping[str, Any]) -> None:
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    (Path(dataset_dir) / SYNTH_MARKER).write_text(text, encoding="utf-8")


@contextmanager
def fresh_tree(root: str | Path, folder: str) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `<root>/<folder>`.

    Refuses to replace a non-empty folder that is not itself synthetic (real data is never overwritten).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / folder
    if target.exists() and not (target / SYNTH_MARKER).is_file() and any(target.iterdir()):
        raise DataError(f"{target} exists and is not a synthetic tree; refusing to overwrite it. "
                        "Choose an empty --data-root for synthetic data")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".tmp", dir=root))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def image_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator keyed by (seed, keys): one image's randomness does not depend on any other image."""
    digest = hashlib.sha256("|".join(map(str, (seed, *keys))).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def save_image(img: Image.Image, path: Path) -> None:
    """PNG for `.png`, JPEG quality 90 otherwise (deterministic bytes for identical pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        img.save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=90)


def first_n(items: Sequence[str], n: int, exclude: set[str] | None = None) -> list[str]:
    """The first n items in list order, skipping `exclude`."""
    exclude = exclude or set()
    return [c for c in items if c not in exclude][:n]


def write_class_folders(dataset_dir: Path, classes: Sequence[str], domains: Mapping[str, tuple[str, str, int]],
                        specs: Mapping[str, ObjectSpec], seed: int, salt: str) -> dict[str, int]:
    """Write `<domain dir>/<class>/<k><ext>` images; returns the file count per domain dir.

    `domains` maps a domain folder (relative, may be nested) to (render style, extension, files per class).
    """
    counts: dict[str, int] = {}
    for rel, (style, ext, per_class) in domains.items():
        for cls in classes:
            folder = dataset_dir / rel / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                img, _ = render(specs[cls], style, image_rng(seed, salt, rel, cls, k), size=IMAGE_SIZE)
                save_image(img, folder / f"{salt}_{k:04d}{ext}")
        counts[rel] = per_class * len(classes)
    return counts


def write_sketch_photo_tree(root: str | Path, folder: str, all_classes: Sequence[str], classes: Sequence[str],
                            domains: Mapping[str, tuple[str, str, int]], seed: int, salt: str,
                            extra: Mapping[str, Any] | None = None) -> Path:
    """A complete synthetic two-domain tree with its marker; `all_classes` fixes each class's look."""
    specs = class_specs(list(all_classes), salt=salt)
    with fresh_tree(root, folder) as tmp:
        counts = write_class_folders(tmp, classes, domains, specs, seed, salt)
        info = {
            "generator": "xdomain_bench synthetic world v1",
            "seed": seed,
            "classes": sorted(classes),
            "expected_counts": {"classes": len(classes), "files": counts,
                                "per_class": {rel: n for rel, (_, _, n) in domains.items()}},
            "descriptions": {c: specs[c].describe() for c in sorted(classes)},
        }
        info.update(extra or {})
        write_synth_marker(tmp, info)
    return Path(root) / folder
