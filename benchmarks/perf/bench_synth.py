"""Synthetic tiny trees (Sketchy, TU-Berlin, CUB): time to write each against the plain writing of the same files.

    python benchmarks/perf/bench_synth.py [--repeats 3]

For each dataset: (a) `get_dataset(NAME).synth(root, "tiny")`, the procedural rendering, metadata and atomic
move included; (b) the reference, measured in the same run: the same number of image files, of the same sizes
and formats, saved with PIL from one flat image into a fresh folder (encoding and file-system cost alone). The
fastest of `--repeats` runs counts for each. The last line is
``RESULT synth_ratio_sketchy=<x> synth_ratio_tuberlin=<y> synth_ratio_cub=<z>`` with ratio = (a) / (b): the
rendering's overhead over writing the files, which does not depend on the machine's speed the way seconds do.
(These timings were once `< 3 s` asserts in the data tests; tests no longer time anything.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from xdomain_bench.data.base import get_dataset

DATASETS = ("sketchy", "tuberlin", "cub")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def time_synth(name: str, work: Path, repeats: int) -> tuple[float, Path]:
    best, tree = float("inf"), work
    for r in range(repeats):
        root = work / f"synth_{r}"
        t0 = time.perf_counter()
        tree = get_dataset(name).synth(root, "tiny", seed=0)
        best = min(best, time.perf_counter() - t0)
    return best, tree


def time_plain_write(tree: Path, work: Path, repeats: int) -> tuple[float, int]:
    """Save one flat image per image file of `tree` (same size, same format), into a fresh folder each time."""
    files = sorted(p for p in tree.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    shapes = []
    for p in files:
        with Image.open(p) as im:
            shapes.append((p.relative_to(tree), im.size, im.mode))
    best = float("inf")
    for r in range(repeats):
        out = work / f"plain_{r}"
        t0 = time.perf_counter()
        for rel, size, mode in shapes:
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            img = Image.new(mode, size, 128)
            if dst.suffix.lower() == ".png":
                img.save(dst, format="PNG")
            else:
                img.save(dst, format="JPEG", quality=90)
        best = min(best, time.perf_counter() - t0)
    return best, len(shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; fastest of {args.repeats} runs each")
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        for name in DATASETS:
            work = Path(tmp) / name
            t_synth, tree = time_synth(name, work, args.repeats)
            t_plain, n = time_plain_write(tree, work, args.repeats)
            ratios[name] = t_synth / t_plain
            print(f"{name:9s} synth tiny {t_synth:6.2f} s   plain write of its {n} images {t_plain:6.2f} s   "
                  f"ratio {ratios[name]:.2f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print("RESULT " + " ".join(f"synth_ratio_{name}={r:.2f}" for name, r in ratios.items()))


if __name__ == "__main__":
    main()
