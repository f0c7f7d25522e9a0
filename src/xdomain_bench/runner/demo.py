"""`xbench demo`: the main job on the embedded default: the synthetic world and the `demo-clip` backbone.

Synthesises the demo trees (if absent), pretrains demo-clip (if not cached), runs the demo suite
(`benchmarks/suites/demo.yaml`: every method on every synthetic dataset, finished cells skipped) and writes
the leaderboards. Cells run in `--jobs` single-threaded worker processes, which on a small CPU machine
uses the cores better than one process with several threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..progress import quiet_libraries

# Synthetic scale of each dataset the demo suite may use (`xbench data synth NAME --scale ...`).
DEMO_SCALES = {"domainnet": "small", "sketchy": "small", "tuberlin": "small", "cub": "small", "fdrd": "small"}
SYNTH_MARKER = ".xbench_synth.json"  # every synthetic writer leaves one in its dataset folder
# `--quick`: the whole path (data, backbone, every method, leaderboard) in about a minute on 2 cores, in its own
# data and run folders, so that it never blocks the full demo's.
QUICK = {"scale": "tiny", "seeds": "0", "max_steps": 2, "backbone": "demo-clip:quick"}
DEFAULT_DIRS = {"small": ("data_synth/demo", "runs/demo"), "tiny": ("data_synth/demo_tiny", "runs/demo_tiny"),
                "quick": ("data_synth/demo_tiny", "runs/quick")}
REAL_DATA_HINT = ("Real data: xbench run --suite ucdr_domainnet --data-root /path/to/data "
                  "--backbone hf-clip:/path/to/clip --out runs/real  (README: Real weights and real data)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo benchmark on the synthetic world with demo-clip",
                       description="Synthesise the demo trees (if absent), pretrain the demo-clip backbone (if not "
                                   "cached), run the demo suite (finished cells are skipped) and write "
                                   "OUT/leaderboard.csv, OUT/leaderboard_wide.csv and OUT/leaderboard.md.")
    p.add_argument("--data-root", help="where the synthetic trees live (default: data_synth/demo; "
                   "data_synth/demo_tiny with --scale tiny or --quick)")
    p.add_argument("--out", help="run folder for records and leaderboards (default: runs/demo; runs/demo_tiny with "
                   "--scale tiny, runs/quick with --quick)")
    p.add_argument("--quick", action="store_true", help="a quick check of the whole path: tiny trees, the small "
                   "demo-clip:quick backbone, seed 0, 2 steps a cell (about a minute on 2 cores)")
    p.add_argument("--suite", help="suite name or YAML file (default: the built-in demo suite)")
    p.add_argument("--scale", choices=("tiny", "small"), help="synthetic scale of every tree (default: the demo's, "
                                                                "small; tiny is for quick checks)")
    p.add_argument("--backbone", help="backbone spec (default: the suite's, demo-clip)")
    p.add_argument("--seeds", help="comma-separated seeds overriding the suite's")
    p.add_argument("--only", action="append", metavar="KEY=A,B,...",
                   help="restrict the suite, e.g. method=zero_shot,coop,dataset=domainnet (repeatable)")
    p.add_argument("--max-steps", type=int, help="total training steps for every cell (= budget steps:N; default: "
                   "the suite's matched budget)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="cells run in this many single-threaded worker processes (default: %(default)s; 1 = in "
                        "this process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="print only results (the leaderboards) and errors")
    p.add_argument("--logger", default="csv", help="training logs: csv (default), tensorboard, wandb or none; "
                   "written under OUT/logs/<cell>/")
    p.set_defaults(func=demo_command)


def apply_quick(args: argparse.Namespace) -> None:
    """--quick's settings (flags given explicitly win) and the default folders of the chosen scale."""
    if args.quick:
        if args.scale not in (None, QUICK["scale"]):
            raise ConfigError(f"--quick runs the {QUICK['scale']} trees; drop --scale {args.scale}, or drop --quick")
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    data_root, out = DEFAULT_DIRS["quick" if args.quick else args.scale or "small"]
    args.data_root = args.data_root or data_root
    args.out = args.out or out


# --- data ----------------------------------------------------------------------------------------------
def ensure_trees(root: Path, datasets: list[str], log, scale: str | None = None, seed: int = 0) -> list[str]:
    """Synthesise each dataset's tree under `root` unless it is there already; returns one line per tree."""
    from ..data.base import get_dataset

    lines = []
    for name in datasets:
        adapter = get_dataset(name)
        want = scale or DEMO_SCALES.get(name, "small")
        folder = root / adapter.folder
        marker = folder / SYNTH_MARKER
        if folder.exists():
            info = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
            if (info.get("scale"), info.get("seed")) != (want, seed):
                raise DataError(f"{folder} exists but is not the demo's synthetic tree ({want} scale, seed {seed}); "
                                f"remove it or pass another --data-root")
            lines.append(f"{name}: {folder} (synthetic, {want}, kept)")
            continue
        t0 = time.perf_counter()
        log(f"synthesising {name} ({want}) under {root} ...")
        path = adapter.synth(root, scale=want, seed=seed)
        lines.append(f"{name}: {path} (synthetic, {want}, written in {time.perf_counter() - t0:.0f} s)")
    return lines


# --- backbone ------------------------------------------------------------------------------------------
def ensure_backbone(spec: str, log) -> dict[str, Any]:
    """Pretrain demo-clip when the spec names it and it is not cached; a short description of the backbone."""
    backend, _, arg = spec.partition(":")
    if backend != "demo-clip":
        return {"spec": spec, "line": spec}
    from ..vlm.demo_clip import demo_clip_dir, ensure_demo_clip, is_cached, parse_demo_spec

    cfg = parse_demo_spec(arg)
    cached = is_cached(cfg)
    path = ensure_demo_clip(cfg, log=log)
    info = json.loads((path / "demo_clip.json").read_text(encoding="utf-8"))
    line = (f"{spec}: a {info['parameters'] / 1e6:.1f} M-parameter CLIP ({cfg.image_size} px, patch {cfg.patch_size}) "
            f"pretrained by the suite on {info['images']} synthetic images of the source domains "
            f"({cfg.steps} steps, seed {cfg.seed}); {'cached' if cached else 'pretrained now'} in {demo_clip_dir(cfg)}")
    return {"spec": spec, "line": line, "config_key": cfg.key(), "cached": cached}


def _move_aside(out: Path, path: Path, folder: str) -> bool:
    """Move a record and its checkpoints to `out/stale/folder`, unless a runner holds the cell's claim."""
    from .claims import claim_cell

    with claim_cell(out, path.stem) as claim:
        if not claim.held:
            return False
        _move(out, path, folder)
    return True


def _move(out: Path, path: Path, folder: str) -> None:
    stale = out / "stale" / folder
    (stale / "records").mkdir(parents=True, exist_ok=True)
    path.rename(stale / "records" / path.name)
    ckpt = out / "checkpoints" / path.stem
    if ckpt.is_dir():
        (stale / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.move(str(ckpt), str(stale / "checkpoints" / path.stem))


def set_aside_stale(out: Path, config_key: str | None, log, cells: list | None = None) -> int:
    """Move records (and checkpoints) out of the way, so that their cells run again: those made with another
    demo-clip config, and those of a cell whose suite settings changed (same leaderboard row as one of `cells`,
    another cell key: e.g. an edited override)."""
    from .records import row_identity

    if not (out / "records").is_dir():
        return 0
    current = {row_identity(c.to_dict()): c.key() for c in cells or []}
    by_config, changed = 0, set()
    for path in sorted((out / "records").glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        cell = rec.get("cell") or {}
        old = (rec.get("backbone") or {}).get("config_key")
        if config_key and cell.get("backbone", "").startswith("demo-clip") and old and old != config_key:
            by_config += _move_aside(out, path, old)
        elif cell and current.get(row_identity(cell), rec.get("cell_key")) != rec.get("cell_key"):
            if _move_aside(out, path, "settings"):
                changed.add(rec.get("cell_key"))
    if by_config:
        log(f"moved {by_config} records of an older demo-clip config to {out / 'stale'}; their cells run again")
    if changed:
        from .suite_run import forget_expected

        forget_expected(out, changed)
        log(f"moved {len(changed)} records whose suite settings changed to {out / 'stale' / 'settings'}; "
            f"their cells run again")
    return by_config + len(changed)


def source_domain_check(backbone: str, root: Path, out: Path) -> str:
    """Zero-shot retrieval across the pretraining (source) domains, painting -> real on DomainNet's unseen
    classes: the check that the backbone really retrieves. Kept out of the leaderboard (one method only)."""
    from .execute import run_cell
    from .records import Cell

    cell = Cell(method="zero_shot", dataset="domainnet", protocol="uccdr", holdout="clipart", backbone=backbone)
    rec = run_cell(cell, root, out / "backbone_check", progress=False)
    if rec["status"] != "ok":
        return f"source-domain check failed: {rec.get('error')}"
    return (f"zero-shot mAP@200 = {rec['metrics']['mAP@200']:.4f} on the source domains "
            f"(queries: {rec.get('query_domain')}; gallery: {rec.get('gallery')})")


# --- cells -----------------------------------------------------------------------------------------------
def training_identity(cell) -> str:
    """Cells that differ only in their test gallery train identically (same train and val rows, config, seed)."""
    from .records import Cell

    options = {k: v for k, v in cell.data_options.items() if k != "gallery"}
    return Cell(**{**cell.to_dict(), "data_options": options}).key()


def share_training(out: Path, done_cell, cell) -> int:
    """Give `cell` the finished phases of `done_cell` (same training identity); the runner then reuses them.
    The caller holds `cell`'s claim."""
    from .records import Cell
    from .resume import PHASE_END

    src_root, dst_root = out / "checkpoints" / Cell(**done_cell).slug(), out / "checkpoints" / cell.slug()
    copied = 0
    for done in sorted(src_root.glob("*/done.json")):
        dst = dst_root / done.parent.name
        if (dst / "done.json").is_file() or not (done.parent / "selected.pt").is_file():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(done.parent / "selected.pt", dst / "selected.pt")
        if (done.parent / PHASE_END).is_file():
            shutil.copy2(done.parent / PHASE_END, dst / PHASE_END)
        shutil.copy2(done, dst / "done.json")  # last: marks the phase finished
        copied += 1
    return copied


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    quiet_libraries()


def run_group(cell_dicts: list[dict[str, Any]], root: str, out: str, progress: bool = False,
              logger: str = "csv") -> list[dict[str, Any]]:
    """Run cells that share a training identity one after the other; the first one trains, the rest reuse it."""
    from .execute import run_cell
    from .records import Cell

    results, trained = [], None
    for d in cell_dicts:
        cell = Cell(**d)
        source = trained
        share = (lambda c=cell, s=source: share_training(Path(out), s, c)) if source is not None else None
        rec = run_cell(cell, root, out, progress=progress, skip_done=True, on_claim=share, logger=logger)
        if rec["status"] in ("ok", "done"):
            trained = d
        results.append({"cell": d, "status": rec["status"], "error": rec.get("error"),
                        "seconds": (rec.get("timings") or {}).get("total_s", 0.0)})
    return results


# Relative cost of one training step (measured in the demo: ProS's simulator makes a step ~3x UCDR-Adapter's).
STEP_COST = {"pros": 3.0, "dcar": 2.0, "dva": 2.0, "ucdr_adapter": 1.5}
DATASET_COST = {"fdrd": 2.0}  # caption data: text-tower work on every step


def task_cost(group: list) -> float:
    """A rough cost, for ordering only: budget (steps or samples) x per-step cost, plus one evaluation per gallery."""
    from .budget import parse_budget

    cell = group[0]
    amount = parse_budget(cell.budget, "demo").amount or 0
    steps = amount * STEP_COST.get(cell.method, 1.0) * DATASET_COST.get(cell.dataset, 1.0)
    return steps + 10.0 * len(group)


def run_cells(cells: list, root: Path, out: Path, jobs: int, console, progress: bool = False,
              logger: str = "csv") -> dict[str, int]:
    """Run the cells without an ok record, in `jobs` single-threaded worker processes (1: in this process).

    Cells that differ only in their gallery form one task, so they train once; the dearest tasks go first, so
    that no worker is left with a long one at the end. A bar counts the cells done (failures print under
    --quiet as well)."""
    from rich.console import Console

    from ..progress import bar
    from .records import Cell, existing_ok_record
    from .suite_run import register_expected

    register_expected(out, cells)
    summary = {"ok": 0, "skipped": 0, "failed": 0, "n/a": 0, "claimed": 0}
    groups: dict[str, list] = {}
    for cell in cells:
        if existing_ok_record(out, cell):
            summary["skipped"] += 1
        else:
            groups.setdefault(training_identity(cell), []).append(cell)
    if summary["skipped"]:
        console.print(f"[dim]{summary['skipped']} of {len(cells)} cells are done already[/]")
    tasks = sorted(groups.values(), key=lambda g: -task_cost(g))
    todo, t0, done = sum(len(g) for g in tasks), time.perf_counter(), 0
    alert = Console(soft_wrap=True)

    def report(results: list[dict[str, Any]]) -> None:
        nonlocal done
        for res in results:
            done += 1
            cells_bar.update(done)
            cell, status = Cell(**res["cell"]), res["status"]
            summary[{"done": "skipped"}.get(status, status) if status in (*summary, "done") else "failed"] += 1
            head = (f"[{done}/{todo}] {cell.method} · {cell.dataset}/{cell.protocol} · {cell.holdout or '-'} · "
                    f"{cell.data_options.get('gallery', '-')} · seed {cell.seed}")
            if status == "ok":
                console.print(f"{head}: ok in {res['seconds']:.0f} s  ({time.perf_counter() - t0:.0f} s elapsed)")
            elif status in ("claimed", "done"):
                console.print(f"{head}: [yellow]skipped[/], " + (res["error"] if status == "claimed" else "done by "
                                                                 "another runner"))
            else:
                alert.print(f"{head}: [red]{status}[/] {res['error']}")

    if not tasks:
        return summary
    with bar("cells", todo, enabled=progress) as cells_bar:
        _run_tasks(tasks, root, out, jobs, progress, logger, report)
    return summary


def _run_tasks(tasks: list, root: Path, out: Path, jobs: int, progress: bool, logger: str, report) -> None:
    if jobs == 1:  # single-threaded like the workers: results do not depend on --jobs
        from ..vlm.demo_clip import torch_threads

        with torch_threads(1):
            for group in tasks:
                report(run_group([c.to_dict() for c in group], str(root), str(out), progress, logger))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = [pool.submit(run_group, [c.to_dict() for c in g], str(root), str(out), False, logger)
                   for g in tasks]
        for fut in as_completed(futures):
            report(fut.result())


# --- the command -----------------------------------------------------------------------------------------
def demo_command(args: argparse.Namespace) -> int:
    from ..leaderboard.cli import leaderboard_command
    from ..progress import chatter, set_quiet
    from .cli import max_steps_label
    from .loggers import check_logger
    from .suite import expand_suite, load_suite, parse_only

    apply_quick(args)
    set_quiet(args.quiet)
    check_logger(args.logger)
    console = chatter()  # progress lines: silent under --quiet
    quiet_libraries()
    t_start = time.perf_counter()
    root, out = Path(args.data_root), Path(args.out)
    suite = load_suite(args.suite or "demo")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    backbone = args.backbone or suite.get("backbone") or "demo-clip"
    cells = expand_suite(suite, backbone=backbone, seeds=seeds, budget=max_steps_label(args.max_steps),
                         only=parse_only(args.only))
    if not cells:
        raise ConfigError(f"the demo suite {suite['_path']} expands to no cells (check --only)")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    from .preflight import check_backbones, check_out_dir

    check_out_dir(out)
    check_backbones([backbone])
    console.rule("[bold]xbench demo[/]: every method on the synthetic world, with the demo-clip backbone")
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    data_lines = ensure_trees(root, sorted({c.dataset for c in cells}), console.print, scale=args.scale)
    times["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bb = ensure_backbone(backbone, console.print)
    times["pretraining"] = time.perf_counter() - t0

    if "domainnet" in {c.dataset for c in cells}:
        bb["check"] = source_domain_check(backbone, root, out)
        console.print(bb["check"])
    t0 = time.perf_counter()
    set_aside_stale(out, bb.get("config_key"), console.print, cells)
    console.print(f"running {len(cells)} cells of suite '{suite.get('name', 'demo')}' into {out} "
                  f"({args.jobs} worker{'s' if args.jobs > 1 else ''})")
    summary = run_cells(cells, root, out, args.jobs, console, progress=not args.no_progress, logger=args.logger)
    times["cells"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    leaderboard_command(argparse.Namespace(dir=str(out), quiet=False, no_reported=True, reported=None))
    times["leaderboard"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_start

    console.rule("[bold]demo summary[/]")
    console.print(f"[bold]backbone[/]  {bb['line']}" + (f"\n          {bb['check']}" if bb.get("check") else ""))
    console.print("[bold]data[/]      " + "\n          ".join(data_lines))
    console.print(f"[bold]cells[/]     {summary['ok']} ran, {summary['skipped']} done already, {summary['failed']} "
                  f"failed, {summary['n/a']} n/a" + (f", {summary['claimed']} left to the runners that hold them"
                                                    if summary["claimed"] else ""))
    console.print(f"[bold]files[/]     {out}/leaderboard.csv (long), {out}/leaderboard_wide.csv (mean ± std over "
                  f"seeds), {out}/leaderboard.md, records in {out}/records/")
    console.print("[bold]time[/]      " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    from ..report.cli import build_report

    console.print(f"[bold]report[/]    {build_report(out, out / 'report.html', reported=False)} (open it in a browser)")
    console.print(REAL_DATA_HINT)
    return 0 if summary["failed"] == 0 else 1
