"""`xbench run`: one cell or a whole suite -> JSON records under OUT/records/."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError, XBenchError
from ..options import deprecated, parse_pairs, split_set
from .preflight import preflight


def budget_label(args: argparse.Namespace) -> str | None:
    """The budget the command line asks for: --max-steps N (= steps:N) or --budget SPEC, else None."""
    from .budget import parse_budget

    if args.max_steps is not None and args.budget is not None:
        raise ConfigError("give either --max-steps or --budget, not both (--max-steps N means --budget steps:N)")
    if args.budget is not None:
        return parse_budget(args.budget, "--budget").label
    return max_steps_label(args.max_steps)


def max_steps_label(max_steps: int | None) -> str | None:
    """`--max-steps N` as the budget label steps:N (N >= 1), or None when not given."""
    if max_steps is None:
        return None
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {max_steps}; it is the total training steps")
    return f"steps:{max_steps}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train and evaluate one cell or a suite",
                       description="Train and evaluate one cell (method x dataset x protocol x variant x seed), or "
                       "every cell of --suite, and write one record per cell under OUT/records/.")
    p.add_argument("--suite", help="run a whole matrix: a built-in suite name (xbench list suites) or a suite YAML file")
    p.add_argument("--seeds", help="comma-separated seeds overriding the suite's, e.g. 0,1,2")
    p.add_argument("--only", action="append", metavar="KEY=A,B,...",
                   help="restrict a suite, e.g. method=coop,vpt,dataset=cub (repeatable; keys: method, dataset, "
                   "protocol, variant, holdout, gallery, seed)")
    p.add_argument("--method", help="registered method name, e.g. zero_shot, ucdr_adapter")
    p.add_argument("--dataset", help="domainnet | sketchy | tuberlin | cub | fdrd")
    p.add_argument("--data-root", required=True, help="folder holding the dataset folders (e.g. ROOT/DomainNet)")
    p.add_argument("--protocol", help="protocol id (default: the dataset card's default)")
    p.add_argument("--variant", default="clean", choices=["clean", "paper"],
                   help="protocol variant: clean (our leak-free splits, default) or paper (the papers' splits)")
    p.add_argument("--holdout", help="held-out query domain (DomainNet settings), default from the card")
    p.add_argument("--gallery", help="DomainNet gallery: unseen | mixed")
    p.add_argument("--paper-profile", help="DomainNet paper profile: snmpnet | pros | ucdr_adapter")
    p.add_argument("--method-variant", help="method variant from its card, e.g. released_code")
    p.add_argument("--backbone", help="backbone spec (xbench list backbones): tiny-clip | demo-clip | "
                   "hf-clip:<hub id or dir>; required unless the data are synthetic trees (then tiny-clip) or the "
                   "suite names one")
    p.add_argument("--allow-download", action="store_true", help="let hf-clip fetch weights from the hub")
    p.add_argument("--seed", type=int, default=0, help="seed of one cell (default 0); suites use --seeds")
    p.add_argument("--max-steps", type=int, help="total training steps over all phases (= --budget steps:N)")
    p.add_argument("--budget", help="training budget: paper (each card's epochs; the default for one cell), "
                   "matched:SAMPLES (same samples for every method) or steps:STEPS; overrides a suite's")
    p.add_argument("--set", dest="overrides", action="append", metavar="method.KEY=VALUE|data.KEY=VALUE",
                   help="an option for one cell (repeatable): method.KEY sets a method card option, dotted for "
                   "nested keys (method.optimizer.lr=1e-3, method.phases.phase2.batch_size=64); data.KEY a "
                   "DataModule/protocol option (data.skip_bad_images=true); values are YAML")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE", help="deprecated: use --set data.KEY=VALUE")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"],
                   help="Lightning accelerator (default auto: a GPU when there is one)")
    p.add_argument("--precision", default="auto", help="auto | 32-true | bf16-mixed | 16-mixed")
    p.add_argument("--devices", type=int, default=1,
                   help="processes/GPUs for Lightning DDP (default 1); N > 1 re-launches the command per rank")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0: load in "
                   "the main process)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="run the frozen image encoder every step even for cacheable methods (H14 cache off)")
    p.add_argument("--per-query-top-k", type=int, default=100, metavar="K",
                   help="save each query's top gallery items (up to the largest metric cut-off, at most K), AP "
                   "and relevant count beside its record, for `xbench report` (default %(default)s; 0: save none, "
                   "e.g. for huge galleries)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="print only results and errors (no bars, no progress lines)")
    p.add_argument("--logger", default="csv", help="training logs through Lightning's loggers: csv (default), "
                   "tensorboard, wandb (optional extras) or none; under OUT/logs/<cell>/<phase>/version_N/")
    p.add_argument("--out", required=True, help="output folder (records, checkpoints)")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve every cell's config and budget from the real training-set sizes; train nothing, "
                   "write nothing under --out")
    p.add_argument("--json", action="store_true", help="with --dry-run: print a JSON list, one object per cell")
    from .launch import add_launch_args

    add_launch_args(p)  # --launcher, --jobs, --shard, --num-nodes, --slurm-*
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from ..progress import quiet_libraries, set_quiet
    from .loggers import check_logger

    set_quiet(args.quiet)
    check_logger(args.logger)
    quiet_libraries()  # no Lightning banners or tips, also without --quiet
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run (a run writes JSON records under OUT/records/)")
    if args.suite:
        return suite_command(args)
    if not args.method or not args.dataset:
        raise ConfigError("xbench run needs --method and --dataset (one cell) or --suite FILE (a matrix)")
    return cell_command(args)


def _dry_run(cells: list, args: argparse.Namespace) -> int:
    from .dry_run import plan_cells, print_plans

    print_plans(plan_cells(cells, args.data_root), args.json)
    return 0


def _run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from .launch import check_launch

    _check_devices(args.devices, args.strategy)
    check_launch(args)
    if args.per_query_top_k < 0:
        raise ConfigError(f"--per-query-top-k must be >= 0 (0 saves no per-query results), got {args.per_query_top_k}")
    return dict(allow_download=args.allow_download, accelerator=args.accelerator, precision=args.precision,
                num_workers=args.num_workers, progress=not (args.no_progress or args.quiet), devices=args.devices,
                strategy=args.strategy, feature_cache=not args.no_feature_cache, num_nodes=args.num_nodes,
                per_query_top_k=args.per_query_top_k, logger=args.logger)


def _check_devices(devices: int, strategy: str) -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    if devices < 1:
        raise ConfigError(f"--devices must be >= 1, got {devices}")
    known = ["auto", *StrategyRegistry.available_strategies()]
    if strategy not in known:
        raise ConfigError(f"unknown --strategy '{strategy}'; known strategies: {', '.join(sorted(known))}")


def suite_command(args: argparse.Namespace) -> int:
    from .launch import launch_suite
    from .suite import expand_suite, load_suite, parse_only

    if args.overrides:
        raise ConfigError("--set applies to one cell; in a suite, put method options in its overrides: "
                          "[{where: {method: NAME}, method: {key: value}}]")
    suite = load_suite(args.suite)
    seeds = _parse_seeds(args.seeds)
    cells = expand_suite(suite, backbone=args.backbone, seeds=seeds, budget=budget_label(args),
                         only=parse_only(args.only))
    if not cells:
        raise ConfigError(f"suite {args.suite} expands to no cells (check --only)")
    kwargs = None if args.dry_run else _run_kwargs(args)
    if not args.backbone and not suite.get("backbone"):
        default_backbone(sorted({c.dataset for c in cells}), args.data_root)
    if args.dry_run:
        return _dry_run(cells, args)
    preflight(cells, args.data_root, args.out, args.allow_download)
    summary = launch_suite(cells, args, kwargs)
    return 0 if summary["failed"] == 0 else 1


def _parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        seeds = [-1]
    if any(s < 0 for s in seeds):
        raise ConfigError(f"bad --seeds '{text}'; write comma-separated integers >= 0, e.g. 0,1,2")
    return seeds


def cell_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .ddp import launch_ranks
    from .execute import run_cell
    from .records import Cell

    sets = split_set(args.overrides)
    if args.data_option:
        deprecated("--data-option KEY=VALUE", "--set data.KEY=VALUE")
    data_options = parse_pairs([*(args.data_option or []), *sets["data"]], "--set data.")
    if args.gallery:
        data_options["gallery"] = args.gallery
    if args.paper_profile:
        data_options["paper_profile"] = args.paper_profile
    _check_names(args.method, args.dataset)
    from ..data.base import get_dataset
    from ..methods.config import resolve_config

    protocol = args.protocol or get_dataset(args.dataset).default_protocol()
    get_dataset(args.dataset).protocol_info(protocol)
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    overrides = parse_pairs(sets["method"], "--set method.")
    resolve_config(args.method, args.method_variant, args.dataset, layers=[("--set", overrides)])  # fail before work
    budget = budget_label(args) or "paper"
    kwargs = None if args.dry_run else _run_kwargs(args)
    backbone = args.backbone or default_backbone([args.dataset], args.data_root)  # after every option is checked
    cell = Cell(method=args.method, dataset=args.dataset, protocol=protocol, variant=args.variant,
                holdout=args.holdout, seed=args.seed, backbone=backbone, method_variant=args.method_variant,
                budget=budget, data_options=data_options, method_overrides=overrides)
    if args.dry_run:
        return _dry_run([cell], args)
    preflight([cell], args.data_root, args.out, args.allow_download)
    launch_ranks(args.accelerator, args.devices, args.num_nodes)  # the other DDP ranks start here
    record = run_cell(cell, args.data_root, args.out, raise_errors=True, **kwargs)
    if record["status"] == "worker":  # a DDP rank > 0: rank 0 reports
        return 0
    if record["status"] == "claimed":
        raise XBenchError(f"cell {cell.slug()} is {record['error']}; wait for that run to finish, or pass another "
                          f"--out")
    console = Console()
    detail = record.get("reason") or ", ".join(f"{k}={v:.4f}" for k, v in record.get("metrics", {}).items())
    console.print(f"[bold]{cell.method}[/] on {cell.dataset}/{cell.protocol}/{cell.variant} "
                  f"(backbone {cell.backbone}, budget {cell.budget}): {record['status']} {detail}")
    return 0 if record["status"] in ("ok", "n/a") else 1  # n/a: the method says why it cannot run here


def _check_names(method: str, dataset: str) -> None:
    """Unknown method or dataset names fail before anything heavy is loaded."""
    from ..data.base import dataset_names
    from ..errors import unknown_name
    from ..methods.base import METHODS, get_method_class

    try:
        get_method_class(method)
    except ConfigError:
        raise unknown_name("method", method, METHODS.names()) from None
    if dataset not in dataset_names():
        raise unknown_name("dataset", dataset, dataset_names())


def default_backbone(datasets: list[str], data_root: str) -> str:
    """tiny-clip (random weights) when every dataset under `data_root` is a synthetic tree; on real data a
    forgotten --backbone would give plausible-looking numbers from random weights, so it is an error."""
    from pathlib import Path

    from ..data.base import get_dataset
    from ..data.synth.sketch_pairs import SYNTH_MARKER
    from ..discovery import backbone_choices

    for name in datasets:
        folder = get_dataset(name).dataset_dir(Path(data_root))  # a missing tree says so itself
        if not (folder / SYNTH_MARKER).is_file():
            raise ConfigError(f"{folder} is not a synthetic tree, so xbench run needs --backbone (tiny-clip has "
                              f"random weights); choose one of: {backbone_choices()}")
    return "tiny-clip"
