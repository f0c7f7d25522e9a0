"""Synthetic CUB-200-2011: procedural "birds" in the official layout, with true bounding boxes.

Fine-grained on purpose: the family word of a class name (`Albatross`, `Sparrow`, `Warbler`) fixes
the shape, the species fixes colour, pattern and part. So classes of one family differ only in
attributes, as real CUB species do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .objects import COLOURS, PARTS, PATTERNS, SHAPES, ObjectSpec, render
from .sketch_pairs import IMAGE_SIZE, fresh_tree, image_rng, save_image, write_synth_marker


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def family(class_name: str) -> str:
    """`017.Cardinal` → `Cardinal`; `126.Nelson_Sharp_tailed_Sparrow` → `Sparrow`."""
    return class_name.split(".", 1)[-1].split("_")[-1]


def bird_specs(class_names: Sequence[str]) -> dict[str, ObjectSpec]:
    """One unique spec per class: shape from the family, (colour, pattern, part) unique within it."""
    n_attr = len(COLOURS) * len(PATTERNS) * len(PARTS)
    used: dict[str, set[int]] = {}
    specs = {}
    for name in class_names:
        fam = family(name)
        shape = SHAPES[_stable("shape:" + fam) % len(SHAPES)]
        taken = used.setdefault(shape, set())
        idx = _stable("species:" + name) % n_attr
        while idx in taken:
            idx = (idx + 97) % n_attr
        taken.add(idx)
        rest, part = divmod(idx, len(PARTS))
        colour, pattern = divmod(rest, len(PATTERNS))
        specs[name] = ObjectSpec(shape, list(COLOURS)[colour], PATTERNS[pattern], PARTS[part])
    return specs


def write_cub_tree(root: str | Path, folder: str, all_classes: Sequence[str], class_ids: Sequence[int],
                   per_class: int, seed: int, extra: dict[str, Any]) -> Path:
    """All metadata files in the official format; images only for `class_ids` (1-based), half train.

    classes.txt always lists every class; image ids are 1..N in class order, as in the real files.
    """
    specs = bird_specs(all_classes)
    with fresh_tree(root, folder) as tmp:
        images, labels, split, boxes = [], [], [], []
        for cid in class_ids:
            cls = all_classes[cid - 1]
            short = cls.split(".", 1)[1]
            for k in range(per_class):
                image_id = len(images) + 1
                img, (x0, y0, x1, y1) = render(specs[cls], "photo", image_rng(seed, "cub", cls, k), size=IMAGE_SIZE)
                name = f"{cls}/{short}_{k + 1:04d}_{image_id}.jpg"
                save_image(img, tmp / "images" / name)
                images.append(f"{image_id} {name}")
                labels.append(f"{image_id} {cid}")
                split.append(f"{image_id} {int(k % 2 == 0)}")
                boxes.append(f"{image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
        files = {
            "classes.txt": [f"{i} {c}" for i, c in enumerate(all_classes, 1)],
            "images.txt": images, "image_class_labels.txt": labels,
            "train_test_split.txt": split, "bounding_boxes.txt": boxes,
        }
        for fname, lines in files.items():
            (tmp / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
        n_train = sum(line.endswith(" 1") for line in split)
        info = {
            "generator": "xdomain_bench synthetic world v1", "seed": seed,
            "class_ids": list(class_ids),
            "expected_counts": {"images": len(images), "classes": len(all_classes), "train": n_train,
                                "test": len(images) - n_train,
                                "classes_1_100": per_class * sum(c <= 100 for c in class_ids),
                                "classes_101_200": per_class * sum(c > 100 for c in class_ids)},
            "descriptions": {all_classes[c - 1]: specs[all_classes[c - 1]].describe() for c in class_ids},
            **extra,
        }
        write_synth_marker(tmp, info)
    return Path(root) / folder
