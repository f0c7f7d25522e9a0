"""`make bench`: every benchmark under benchmarks/perf, one after another, each ending in its RESULT line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ["perf/bench_metrics.py"],
    ["perf/bench_dalsclip_cache.py"],
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
