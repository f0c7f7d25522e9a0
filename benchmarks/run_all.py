"""`make bench`: every benchmark under benchmarks/perf, one after another, each ending in its RESULT line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ["perf/bench_metrics.py"],
    # DALSCLIP, one epoch with the H14 feature cache against without it (issue 7, target >= 10x). The realistic
    # case: ViT-B/16 shapes (random weights: speed does not depend on them), the synthetic DomainNet tree, the
    # card's batch of 160 and all K x C = 5 x 245 class prompts per step; the epoch is capped at its first two
    # batches (both runs alike) so that the cold build and the encoder epoch stay at minutes on a CPU.
    ["perf/bench_dalsclip_cache.py", "--backbone", "tiny-clip:preset=vit-b-16", "--scale", "small",
     "--max-batches", "2", "--threads", "1"],
    # the same on tiny-clip (32-pixel images, 2-layer towers), a whole epoch: the image path costs little there,
    # so this ratio shows the floor set by DALSCLIP's own text-tower work rather than the realistic gain
    ["perf/bench_dalsclip_cache.py", "--scale", "small", "--threads", "1"],
    ["perf/bench_step_cost.py"],
]


def main() -> int:
    failed = 0
    for bench in BENCHES:
        cmd = [sys.executable, str(HERE / bench[0]), *bench[1:]]
        print(f"=== {' '.join(bench)}", flush=True)
        failed += subprocess.run(cmd, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
