"""`make bench`: every benchmark under benchmarks/perf, one after another. Each prints a last line
`RESULT key=value ...`; this writes `benchmarks/results/<name>.json` per benchmark (command, exit status, seconds,
load, the RESULT values and each stated target with whether it holds) and ends with a summary of the targets.

    python benchmarks/run_all.py [--only NAME[,NAME...]] [--out DIR]

Exit status 1 when a benchmark fails, prints no RESULT line, or misses a stated target."""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPS = {">=": operator.ge, "<=": operator.le}


@dataclass
class Bench:
    name: str
    argv: list[str]
    targets: dict[str, tuple[str, float]] = field(default_factory=dict)  # RESULT key -> (op, bound)
    why: str = ""


BENCHES = [
    Bench("metrics", ["perf/bench_metrics.py"],
          {"speedup_vs_reference": (">=", 10.0), "floor_ratio": ("<=", 3.0), "max_abs_diff": ("<=", 1e-9)},
          "issue 3: engine against the per-query full-sort reference and the matmul + top-k floor; faiss reported"),
    # DALSCLIP, one epoch with the H14 feature cache against without it. The realistic case: ViT-B/16 shapes
    # (random weights: speed does not depend on them), the synthetic DomainNet tree, the card's batch of 160 and
    # all K x C = 5 x 245 class prompts per step; the epoch is capped at its first two batches (both runs alike)
    # so that the cold build and the encoder epoch stay at minutes on a CPU.
    Bench("dalsclip_cache_vitb16", ["perf/bench_dalsclip_cache.py", "--backbone", "tiny-clip:preset=vit-b-16",
                                    "--scale", "small", "--max-batches", "2", "--threads", "1"],
          {"cache_speedup": (">=", 10.0)}, "issue 7: >= 10x faster with the feature cache"),
    # the same on tiny-clip (32-pixel images, 2-layer towers), a whole epoch: the image path costs little there,
    # so this ratio shows the floor set by DALSCLIP's own text-tower work rather than the realistic gain
    Bench("dalsclip_cache_tiny", ["perf/bench_dalsclip_cache.py", "--scale", "small", "--threads", "1",
                                  "--target", "0"], {}, "no target: the floor of the cache's gain"),
    Bench("step_cost", ["perf/bench_step_cost.py"], {}, "no target: each method's step against a zero-shot forward"),
    Bench("synth", ["perf/bench_synth.py"], {}, "no target: synthetic trees against plain writing of their files"),
    Bench("launch", ["perf/bench_launch.py"], {},
          "no target: smoke suite serial against --launcher local --jobs 2, and 1- against 2-process evaluation"),
]


def parse_result(stdout: str) -> dict[str, float] | None:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return None
    return {k: float(v) for k, v in (item.split("=", 1) for item in lines[-1].split()[1:])}


def run(bench: Bench, out_dir: Path) -> dict:
    cmd = [sys.executable, str(HERE / bench.argv[0]), *bench.argv[1:]]
    print(f"=== {bench.name}: {' '.join(bench.argv)}", flush=True)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # echo as it comes, keep for the record
        print(line, end="", flush=True)
        lines.append(line)
    rc = proc.wait()
    stdout = "".join(lines)
    result = parse_result(stdout)
    targets = {}
    for key, (op, bound) in bench.targets.items():
        value = None if result is None else result.get(key)
        targets[key] = {"op": op, "bound": bound, "value": value,
                        "holds": value is not None and OPS[op](value, bound)}
    record = {
        "name": bench.name, "command": [Path(sys.executable).name, *bench.argv], "returncode": rc,
        "seconds": round(time.perf_counter() - t0, 2), "load_average": {"start": load0, "end": os.getloadavg()[0]},
        "cpus": os.cpu_count(), "python": platform.python_version(), "result": result, "targets": targets,
        "note": bench.why, "ok": rc == 0 and result is not None and all(t["holds"] for t in targets.values()),
        "output_tail": lines[-40:],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{bench.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def summary(records: list[dict]) -> list[str]:
    rows = []
    for r in records:
        if r["returncode"] != 0 or r["result"] is None:
            status = f"FAILED (exit {r['returncode']}{', no RESULT line' if r['result'] is None else ''})"
            rows.append(f"{r['name']:24s} {status}")
        for key, t in r["targets"].items():
            value = "missing" if t["value"] is None else f"{t['value']:g}"
            rows.append(f"{r['name']:24s} {key} = {value} (target {t['op']} {t['bound']:g}): "
                        + ("holds" if t["holds"] else "FALLS SHORT"))
        if not r["targets"] and r["returncode"] == 0 and r["result"] is not None:
            rows.append(f"{r['name']:24s} no stated target; " + " ".join(f"{k}={v:g}" for k, v in r["result"].items()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(b.name for b in BENCHES))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    chosen = BENCHES
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {b.name for b in BENCHES})
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(b.name for b in BENCHES)}")
        chosen = [b for b in BENCHES if b.name in names]
    records = [run(b, args.out) for b in chosen]
    print(f"\n=== summary (results in {args.out}/<name>.json)")
    for row in summary(records):
        print(row)
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
