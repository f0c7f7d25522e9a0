"""Launchers for a suite's cells: `--shard i/N`, a local pool of worker processes, SLURM through submitit.

Every worker runs a cell through `run_cell`, which claims it first (runner/claims.py), so any mix of
launchers, shards and re-runs on one shared output folder never runs a cell twice at once and never
overwrites a finished record; a record is the same whichever process wrote it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .records import Cell, existing_ok_record

STATUSES = ("ok", "skipped", "failed", "n/a", "claimed")


# --- command line -------------------------------------------------------------------------------------
def add_launch_args(p) -> None:
    """`xbench run` flags for scaling out: launchers, shards, nodes, SLURM resources."""
    g = p.add_argument_group("scaling out (README: Clusters and many GPUs)")
    g.add_argument("--launcher", choices=("local", "slurm"), help="run a suite's cells in parallel: local (a "
                   "pool of worker processes on this machine) or slurm (one SLURM array task per cell, via "
                   "submitit); default: one after another in this process")
    g.add_argument("--jobs", type=int, help="local: worker processes (default: one per visible GPU, else 2); "
                   "slurm: array tasks running at once (default: no limit)")
    g.add_argument("--shard", metavar="I/N", help="run only shard I of N (0 <= I < N) of the suite's cells: a "
                   "fixed, disjoint partition, e.g. --shard $SLURM_ARRAY_TASK_ID/8")
    g.add_argument("--num-nodes", type=int, default=1, help="nodes for one cell's Lightning DDP, --devices "
                   "processes on each (default 1); under SLURM the ranks come from its environment")
    g.add_argument("--slurm-partition", help="slurm: partition to submit to")
    g.add_argument("--slurm-time", type=int, default=240, help="slurm: time limit per task in minutes (default "
                   "%(default)s); a task that runs out is requeued and resumes from its checkpoint")
    g.add_argument("--slurm-gpus", type=int, help="slurm: GPUs per node (default: --devices; none with "
                   "--accelerator cpu)")
    g.add_argument("--slurm-cpus", type=int, help="slurm: CPUs per task")


def check_launch(args) -> None:
    """Validate the scaling-out flags before any work."""
    if args.num_nodes < 1:
        raise ConfigError(f"--num-nodes must be >= 1, got {args.num_nodes}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    for name in ("slurm_time", "slurm_gpus", "slurm_cpus"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "slurm_gpus" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not args.suite:
        for flag in ("launcher", "shard", "jobs"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag} applies to a suite (--suite); one cell runs in this process")
        return
    if args.shard is not None:
        parse_shard(args.shard)
    if args.jobs is not None and args.launcher is None:
        raise ConfigError("--jobs goes with --launcher local or --launcher slurm")
    if args.launcher == "local" and (args.devices > 1 or args.num_nodes > 1):
        raise ConfigError("--launcher local runs one cell per worker on one device; for one cell on several "
                          "GPUs give --devices without --launcher, or use --launcher slurm")
    if args.launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm needs SLURM, but there is no sbatch on this machine; run it on a "
                          "SLURM login node, or use --launcher local / --shard i/N")


def launch_suite(cells: list[Cell], args, kwargs: dict[str, Any]) -> dict[str, int]:
    """Run (or submit) the suite's cells as the flags say; a summary of cell outcomes."""
    from rich.console import Console

    from .ddp import launch_ranks
    from .execute import global_rank
    from .suite_run import register_expected, run_suite

    console = Console(soft_wrap=True, quiet=global_rank() != 0)
    out = Path(args.out)
    if global_rank() == 0:
        register_expected(out, cells)  # the whole suite: the leaderboard shows what other shards still owe
    if args.shard is not None:
        index, count = parse_shard(args.shard)
        cells = shard_cells(cells, index, count)
        console.print(f"shard {index}/{count}: {len(cells)} cells")
    if args.launcher == "local":
        return run_local(cells, args.data_root, out, args.jobs or default_jobs(), kwargs, console)
    if args.launcher == "slurm":
        options = {"partition": args.slurm_partition, "time": args.slurm_time, "gpus": args.slurm_gpus,
                   "cpus": args.slurm_cpus, "jobs": args.jobs}
        jobs = submit_cells(slurm_executor(out, options, kwargs), cells, args.data_root, out, kwargs)
        ids = sorted({j.job_id.split("_")[0] for j in jobs})
        console.print(f"submitted {len(jobs)} cells as SLURM array job {', '.join(ids) or '(none: all done)'}; "
                      f"logs under {out / 'slurm'}; when they finish: xbench leaderboard {out}")
        return dict.fromkeys(STATUSES, 0)
    launch_ranks(kwargs["accelerator"], kwargs["devices"], kwargs["num_nodes"])
    return run_suite(cells, args.data_root, out, **kwargs)


# --- shards ---------------------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """`i/N` (0 <= i < N, like $SLURM_ARRAY_TASK_ID) -> (i, N)."""
    head, _, tail = text.partition("/")
    try:
        index, count = int(head), int(tail)
    except ValueError:
        index, count = -1, 0
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"bad --shard '{text}'; write i/N with 0 <= i < N, e.g. 0/4 (shards count from 0)")
    return index, count


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """Shard `index` of `count`: every count-th cell of the suite ordered by cell key, from position `index`,
    kept in suite order. Disjoint, together the whole suite, balanced to one cell, and the same whatever
    order the suite lists its cells in."""
    keys = sorted(c.key() for c in cells)
    mine = set(keys[index::count])
    return [c for c in cells if c.key() in mine]


# --- running one cell in a worker -----------------------------------------------------------------------
def run_one(cell: dict[str, Any], data_root: str, out: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Claim and run one cell (skipping it when done or claimed); a short summary of what happened."""
    from .ddp import launch_ranks
    from .execute import run_cell

    launch_ranks(kwargs.get("accelerator", "auto"), kwargs.get("devices", 1), kwargs.get("num_nodes", 1))
    rec = run_cell(Cell(**cell), data_root, out, skip_done=True, **kwargs)
    return {"cell": cell, "status": rec["status"], "error": rec.get("error") or rec.get("reason"), "pid": os.getpid(),
            "seconds": (rec.get("timings") or {}).get("total_s", 0.0)}


def tally(summary: dict[str, int], res: dict[str, Any], console, done: int, total: int) -> None:
    """Count one worker's result and print its line."""
    status = {"done": "skipped"}.get(res["status"], res["status"])
    summary[status if status in summary else "failed"] += 1
    cell = Cell(**res["cell"])
    from .execute import cell_label

    head = f"[{done}/{total}] {cell_label(cell)}"
    if status == "ok":
        console.print(f"{head}: ok in {res['seconds']:.1f} s")
    elif status in ("claimed", "skipped"):
        console.print(f"{head}: [yellow]skipped[/], " + (res["error"] if status == "claimed" else "done already"))
    else:
        console.print(f"{head}: [red]{status}[/] {res['error']}")


# --- local pool -------------------------------------------------------------------------------------------
def default_jobs() -> int:
    """One worker per visible GPU, else two (or one on a one-core machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else min(2, os.cpu_count() or 1)


def _init_worker(gpus, threads: int) -> None:
    if gpus is not None:  # before CUDA starts in this process: the worker sees only its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    import torch

    torch.set_num_threads(threads)
    from ..progress import quiet_libraries

    quiet_libraries()


def todo_cells(cells: list[Cell], out: Path, summary: dict[str, int]) -> list[Cell]:
    """The cells without an ok record under `out` (the others are counted as skipped)."""
    todo = [c for c in cells if existing_ok_record(out, c) is None]
    summary["skipped"] += len(cells) - len(todo)
    return todo


def run_local(cells: list[Cell], data_root: str | Path, out: str | Path, jobs: int, kwargs: dict[str, Any],
              console) -> dict[str, int]:
    """Run the cells in `jobs` worker processes: one GPU each when there are GPUs, else CPU cores shared
    out (each worker gets cores // jobs threads, at least one)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    out = Path(out)
    summary = dict.fromkeys(STATUSES, 0)
    todo = todo_cells(cells, out, summary)
    ctx = mp.get_context("spawn")
    gpus = None
    on_gpu = kwargs.get("accelerator") != "cpu" and torch.cuda.is_available()
    if on_gpu:
        if jobs > torch.cuda.device_count():
            raise ConfigError(f"--jobs {jobs} asks for more workers than the {torch.cuda.device_count()} visible "
                              f"GPUs (one cell per GPU)")
        gpus = ctx.Queue()
        for i in range(jobs):
            gpus.put(i)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    console.print(f"running {len(todo)} cells in {jobs} worker processes "
                  f"({'one GPU' if on_gpu else f'{threads} CPU thread(s)'} each); {summary['skipped']} done already")
    t0 = time.perf_counter()
    from ..progress import bar

    # one bar here for the cells done; none in the workers (parallel processes cannot share one display)
    with bar("cells", len(todo), enabled=kwargs.get("progress", True)) as cells_bar, \
            ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(gpus, threads)) as pool:
        futures = [pool.submit(run_one, c.to_dict(), str(data_root), str(out), {**kwargs, "progress": False})
                   for c in todo]
        for done, fut in enumerate(as_completed(futures), 1):
            tally(summary, fut.result(), console, done, len(todo))
            cells_bar.update(done)
    console.print(f"suite: {summary['ok']} ran, {summary['skipped']} already done, {summary['failed']} failed, "
                  f"{summary['n/a']} n/a, {summary['claimed']} left to the runners that hold them, in "
                  f"{time.perf_counter() - t0:.0f} s")
    return summary


# --- SLURM through submitit --------------------------------------------------------------------------------
class CellTask:
    """One cell as a SLURM array task. Checkpointable (as submitit.helpers.Checkpointable): on preemption or
    timeout submitit calls `checkpoint` and requeues the task with the same arguments; the requeued run claims
    the cell again and resumes from its last checkpoint (runner/resume.py)."""

    def __call__(self, cell: dict[str, Any], data_root: str, out: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return run_one(cell, data_root, out, kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def slurm_executor(out: Path, options: dict[str, Any], kwargs: dict[str, Any]):
    """A submitit SLURM executor: logs in OUT/slurm/<job id>/, one task per rank (`--devices` per node)."""
    import submitit

    executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster="slurm")
    devices, nodes = int(kwargs.get("devices", 1)), int(kwargs.get("num_nodes", 1))
    params = {"name": "xbench", "nodes": nodes, "tasks_per_node": devices, "timeout_min": options["time"],
              "slurm_signal_delay_s": 120}
    if kwargs.get("accelerator") != "cpu":
        params["gpus_per_node"] = options["gpus"] if options["gpus"] is not None else devices
    for key, name in (("cpus", "cpus_per_task"), ("partition", "slurm_partition"),
                      ("jobs", "slurm_array_parallelism")):
        if options.get(key) is not None:
            params[name] = options[key]
    executor.update_parameters(**params)
    return executor


def submit_cells(executor, cells: list[Cell], data_root: str | Path, out: str | Path,
                 kwargs: dict[str, Any]) -> list:
    """Submit one task per cell that has no ok record yet, as one job array; returns submitit's jobs."""
    todo = todo_cells(cells, Path(out), dict.fromkeys(STATUSES, 0))
    if not todo:
        return []
    task = CellTask()
    n = len(todo)
    return executor.map_array(task, [c.to_dict() for c in todo], [str(data_root)] * n, [str(out)] * n,
                              [kwargs] * n)
