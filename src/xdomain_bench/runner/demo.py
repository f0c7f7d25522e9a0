"""`xbench demo`: the main job on the embedded default (the synthetic world and a built-in backbone)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo benchmark on the synthetic world",
                       description="Synthesise the demo trees (if absent), run the demo cells and write "
                                   "OUT/leaderboard.csv.")
    p.add_argument("--data-root", default="data_synth/demo", help="where the synthetic trees live")
    p.add_argument("--out", default="runs/demo", help="run folder for records and leaderboards")
    p.add_argument("--backbone", default="tiny-clip")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..data.base import get_dataset
    from ..leaderboard.cli import leaderboard_command
    from .execute import run_cell
    from .records import Cell, existing_ok_record

    console = Console()
    root, out = Path(args.data_root), Path(args.out)
    t0 = time.perf_counter()
    adapter = get_dataset("domainnet")
    if not (root / adapter.folder).is_dir():
        console.print(f"synthesising DomainNet (tiny) under {root} ...")
        adapter.synth(root, scale="tiny", seed=0)
    cells = [Cell(method="zero_shot", dataset="domainnet", protocol="ucdr", holdout="sketch", seed=0,
                  backbone=args.backbone, data_options={"gallery": "unseen"})]
    for cell in cells:
        if existing_ok_record(out, cell):
            console.print(f"[dim]done already:[/] {cell.key()}")
            continue
        console.print(f"running {cell.method} on {cell.dataset}/{cell.protocol} (held-out {cell.holdout})")
        rec = run_cell(cell, root, out, progress=not args.no_progress)
        if rec["status"] != "ok":
            console.print(f"[red]cell failed:[/] {rec['error']}")
    leaderboard_command(argparse.Namespace(dir=str(out), quiet=False))
    console.print(f"backbone: {args.backbone}; data: {root.resolve()}; results: {out.resolve()} "
                  f"({time.perf_counter() - t0:.0f} s)")
    console.print("Real data: xbench run --method M --dataset domainnet --data-root /path/to/root "
                  "--backbone hf-clip:openai/clip-vit-base-patch16 --out runs/mine  (see README)")
    return 0
