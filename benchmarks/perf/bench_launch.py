"""Scaling out on one machine: a suite serial against `--launcher local --jobs 2`, and one evaluation on 1
against 2 processes.

    python benchmarks/perf/bench_launch.py [--only KEY=A,B,...] [--gallery N] [--skip-suite]

(a) The smoke suite (tiny synthetic trees, tiny-clip, two steps per cell; `--only` restricts it) run by
`xbench run` serially, then with `--launcher local --jobs 2`, each into a fresh folder: wall time of the
whole command, worker start-up included. (b) Distributed evaluation (eval/distributed.py) under gloo: a
synthetic query set and gallery of `--gallery` rows pushed through a small MLP encoder (the embedding work),
gathered, metrics on rank 0; one process against two, one thread each.

The last line is `RESULT suite_ratio=<serial / local jobs 2> eval_ratio=<1 process / 2 processes>`; above 1
means the parallel run is faster. On a shared 2-core box both are bounded by 2, and the suite's ratio also
pays for each worker importing torch and Lightning (a few seconds), which dominates tiny cells.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DATASETS = ("domainnet", "sketchy", "tuberlin", "cub", "fdrd")


def xbench(*args: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xdomain_bench.cli", *args], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.exit(f"xbench {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def suite_ratio(only: str | None, tmp: Path) -> float:
    env = {**os.environ, "XBENCH_CACHE": str(tmp / "cache")}
    root = tmp / "data"
    for name in DATASETS:
        xbench("data", "synth", name, "--data-root", str(root), "--scale", "tiny", env=env)
    common = ["run", "--suite", "smoke", "--data-root", str(root), "--accelerator", "cpu", "--no-progress",
              *(["--only", only] if only else [])]
    xbench(*common, "--out", str(tmp / "warm"), env=env)  # manifests and caches built once, for both
    serial = xbench(*common, "--out", str(tmp / "serial"), env=env)
    local = xbench(*common, "--out", str(tmp / "local"), "--launcher", "local", "--jobs", "2", env=env)
    print(f"suite: serial {serial:.1f} s, --launcher local --jobs 2 {local:.1f} s")
    return serial / local


def evaluate(rank: int, world: int, port: int, n: int, out: dict) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.utils.data import DataLoader, TensorDataset

    from xdomain_bench.eval.distributed import embed_sharded
    from xdomain_bench.eval.engine import evaluate_class_retrieval

    gen = torch.Generator().manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1024),
                                  torch.nn.GELU(), torch.nn.Linear(1024, 128))
    for p in encoder.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.05
    roles = {r: (torch.randn(m, 256, generator=gen), torch.randint(0, 50, (m,), generator=gen))
             for r, m in (("query", n // 4), ("gallery", n))}

    @torch.no_grad()
    def embed(loader, expected):
        parts = [(encoder(x), y) for x, y in loader]
        return torch.cat([p for p, _ in parts]), torch.cat([y for _, y in parts])

    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    got = {r: embed_sharded(embed, DataLoader(TensorDataset(*xy), batch_size=256), len(xy[0]), r)
           for r, xy in roles.items()}
    if rank == 0:
        evaluate_class_retrieval(got["query"][0], got["query"][1], got["gallery"][0], got["gallery"][1],
                                 ["mAP@all"], distance="l2")
        out[world] = time.perf_counter() - t0
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _spawned(rank: int, world: int, port: int, n: int, path: str) -> None:
    out: dict = {}
    evaluate(rank, world, port, n, out)
    if rank == 0:
        Path(path).write_text(str(out[world]))


def eval_ratio(n: int, tmp: Path) -> float:
    out: dict = {}
    evaluate(0, 1, 0, n, out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_spawned, args=(2, port, n, str(tmp / "two.txt")), nprocs=2, join=True)
    two = float((tmp / "two.txt").read_text())
    print(f"evaluation of {n} gallery + {n // 4} query rows: 1 process {out[1]:.2f} s, 2 processes {two:.2f} s")
    return out[1] / two


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="restrict the smoke suite, e.g. method=zero_shot,linear_probe")
    p.add_argument("--gallery", type=int, default=40000, help="gallery rows of the evaluation (default %(default)s)")
    p.add_argument("--skip-suite", action="store_true", help="only the evaluation part (suite_ratio=nan)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        suite = float("nan") if args.skip_suite else suite_ratio(args.only, Path(tmp))
        ev = eval_ratio(args.gallery, Path(tmp))
    print(f"RESULT suite_ratio={suite:.2f} eval_ratio={ev:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
