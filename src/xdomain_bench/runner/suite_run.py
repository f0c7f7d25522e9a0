"""Run a whole suite: skip finished cells and cells another runner has claimed, record failures and go on,
show cells done/total."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..io_utils import atomic_write_json
from ..leaderboard.status import EXPECTED_CELLS
from .claims import describe
from .records import Cell, existing_ok_record


def register_expected(out_dir: Path, cells: list[Cell]) -> None:
    """Remember every cell a suite asked for, so the leaderboard can show missing ones."""
    path = out_dir / EXPECTED_CELLS
    known: dict[str, Any] = {}
    if path.is_file():
        known = {c["key"]: c for c in json.loads(path.read_text(encoding="utf-8"))}
    for cell in cells:
        known[cell.key()] = {"key": cell.key(), "cell": cell.to_dict()}
    atomic_write_json(path, [known[k] for k in sorted(known)])


def forget_expected(out_dir: Path, keys: set[str]) -> None:
    """Drop cells from the expected list (their settings changed: the suite no longer asks for them)."""
    path = out_dir / EXPECTED_CELLS
    if keys and path.is_file():
        known = json.loads(path.read_text(encoding="utf-8"))
        atomic_write_json(path, [c for c in known if c["key"] not in keys])


def run_suite(cells: list[Cell], data_root: str | Path, out_dir: str | Path, **run_kwargs: Any) -> dict[str, int]:
    from rich.console import Console

    from ..progress import bar, is_quiet
    from .execute import global_rank

    rank0 = global_rank() == 0  # DDP ranks > 0 re-run the whole command and train alongside rank 0
    console = Console(quiet=not rank0 or is_quiet(), soft_wrap=True)  # progress lines; piped output never wraps
    results = Console(quiet=not rank0, soft_wrap=True)  # one line per cell run, the summary: also under --quiet
    shown = run_kwargs.get("progress", True) and rank0
    with bar("cells", len(cells), enabled=shown) as cells_bar:
        summary = _run_cells(cells, data_root, out_dir, run_kwargs, console, results, cells_bar, rank0, shown)
    return summary


def _run_cells(cells: list[Cell], data_root, out_dir, run_kwargs: dict[str, Any], console, results, cells_bar,
               rank0: bool, shown: bool) -> dict[str, int]:
    from .ddp import follow_rank0
    from .execute import run_cell

    out_dir = Path(out_dir)  # the expected cells were registered by launch_suite (the whole suite, every shard)
    summary = {"ok": 0, "skipped": 0, "failed": 0, "n/a": 0, "claimed": 0}
    t0 = time.perf_counter()
    for i, cell in enumerate(cells, 1):
        head = f"[{i}/{len(cells)}] {cell.method} · {cell.dataset}/{cell.protocol}/{cell.variant}"
        head += f" · {cell.holdout or '-'} · {cell.data_options.get('gallery', '-')} · seed {cell.seed} · {cell.backbone}"
        if follow_rank0(existing_ok_record(out_dir, cell) is not None):  # DDP ranks skip what rank 0 skips
            summary["skipped"] += 1
            console.print(f"[dim]{head}: done already[/]")
            cells_bar.update(i)
            continue
        if not shown:  # else the cell's bar names it
            console.print(f"[bold]{head}[/]")
        rec = run_cell(cell, data_root, out_dir, skip_done=True, **run_kwargs)
        cells_bar.update(i)
        status = rec["status"]
        if not rank0:  # rank 0 reports and counts; a worker exiting non-zero would stop the whole run
            continue
        if status in ("claimed", "done"):  # another runner has it, or finished it meanwhile
            summary["claimed" if status == "claimed" else "skipped"] += 1
            console.print(f"{head}: [yellow]skipped[/], {rec['error']}" if status == "claimed" else
                          f"{head}: done already")
            continue
        if rec.get("claim_recovered"):
            console.print(f"    took over from a runner that died holding this cell: {describe(rec['claim_recovered'])}")
        summary[status if status in summary else "failed"] += 1
        if status == "ok":
            results.print(f"{head}: ok in {rec['timings']['total_s']:.1f} s")
        elif status == "n/a":
            results.print(f"{head}: n/a, {rec['reason']}")
        else:
            results.print(f"{head}: [red]{status}[/], {rec.get('error')}")
    claimed = f", {summary['claimed']} left to the runners that hold them" if summary["claimed"] else ""
    results.print(f"suite: {summary['ok']} ran, {summary['skipped']} already done, {summary['failed']} failed, "
                  f"{summary['n/a']} n/a{claimed}, in {time.perf_counter() - t0:.0f} s")
    return summary
