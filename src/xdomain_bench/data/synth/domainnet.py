"""A synthetic DomainNet: all 345 real class names, six visual domains, the official folder layout."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ConfigError, DataError
from .objects import class_specs, render
from .sketch_pairs import SYNTH_MARKER as SYNTH_SIDECAR

if TYPE_CHECKING:
    from ..domainnet import DomainNet

TRAIN_SHARE = 7  # of 10 images go to the synthetic <domain>_train.txt, the rest to <domain>_test.txt


def per_class_counts(adapter: DomainNet, scale: str, seed: int) -> dict[tuple[str, str], int]:
    """Images per (domain, class): seeded in [min, max]; UdCDR classes get at least `udcdr_min`
    so that every protocol (10 % quickdraw queries included) has rows at every scale."""
    cfg = adapter.card["synth"]["per_class"][scale]
    udcdr = set(adapter.udcdr_classes)
    rng = np.random.RandomState(seed)
    counts = {}
    for domain in adapter.domains:
        draws = rng.randint(cfg["min"], cfg["max"] + 1, size=len(adapter.class_names))
        for cls, n in zip(adapter.class_names, draws):
            counts[(domain, cls)] = max(int(n), cfg["udcdr_min"]) if cls in udcdr else int(n)
    return counts


def synth_domainnet(adapter: DomainNet, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
    """Write `<root>/DomainNet` (atomically: built in a temp folder, then renamed); returns it.

    An existing synthetic tree with the same scale and seed is kept as is; anything else there is an error.
    """
    scales = adapter.card["synth"]["per_class"]
    if scale not in scales:
        raise ConfigError(f"unknown synth scale '{scale}'; known scales: {', '.join(scales)}")
    root = Path(root)
    target = root / adapter.folder
    if target.exists():
        side = target / SYNTH_SIDECAR
        if side.is_file():
            old = json.loads(side.read_text(encoding="utf-8"))
            if (old.get("scale"), old.get("seed")) == (scale, seed):
                return target
        raise DataError(f"{target} already exists; remove it or pick another --data-root")
    root.mkdir(parents=True, exist_ok=True)
    size = int(adapter.card["synth"]["image_size"][scale])
    counts = per_class_counts(adapter, scale, seed)
    specs = class_specs(adapter.class_names, salt="domainnet")
    tmp = Path(tempfile.mkdtemp(prefix=f".{adapter.folder}.", dir=root))
    try:
        splits: dict[tuple[str, str], list[str]] = {}
        for d_idx, domain in enumerate(adapter.domains):
            for cls in adapter.class_names:
                cid = adapter.class_index[cls]
                folder = tmp / domain / cls
                folder.mkdir(parents=True)
                rng = np.random.default_rng([seed, d_idx, cid])
                for k in range(counts[(domain, cls)]):
                    name = f"{domain}_{cid:03d}_{k:06d}.jpg"
                    img, _ = render(specs[cls], domain, rng, size=size)
                    img.save(folder / name, format="JPEG", quality=90)
                    part = "train" if k % 10 < TRAIN_SHARE else "test"
                    splits.setdefault((domain, part), []).append(f"{domain}/{cls}/{name} {cid}")
        for (domain, part), lines in splits.items():
            (tmp / f"{domain}_{part}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        totals = {d: sum(n for (dd, _), n in counts.items() if dd == d) for d in adapter.domains}
        totals["total"] = sum(totals.values())
        sidecar = {"dataset": adapter.name, "synthetic": True, "scale": scale, "seed": seed, "image_size": size,
                   "counts": totals, "per_class": {f"{d}/{c}": n for (d, c), n in sorted(counts.items())},
                   "note": "split-file labels are the suite's class ids, not the official DomainNet labels"}
        (tmp / SYNTH_SIDECAR).write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
