"""`xbench eval-embeddings`: retrieval metrics for saved query/gallery embeddings (.npy files)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from .engine import DISTANCES, TIE_MODES, evaluate_class_retrieval

DEFAULT_METRICS = "mAP@200,Prec@200,mAP@all"
COUNT_KEYS = ("n_queries", "n_gallery", "n_queries_no_relevant")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-embeddings",
        help="class-retrieval metrics for saved embeddings",
        description="Compute retrieval metrics (PROTOCOLS.md §7) from .npy embeddings and labels.",
    )
    p.add_argument("--query", required=True, help="query embeddings, (Nq, D) .npy")
    p.add_argument("--query-labels", required=True, help="query labels, (Nq,) .npy of ints or strings")
    p.add_argument("--gallery", help="gallery embeddings, (Ng, D) .npy (omit with --same-set)")
    p.add_argument("--gallery-labels", help="gallery labels, (Ng,) .npy (omit with --same-set)")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated metric names (default {DEFAULT_METRICS})")
    p.add_argument("--same-set", action="store_true", help="queries are the gallery; each query excludes itself")
    p.add_argument("--distance", choices=DISTANCES, default="cosine")
    p.add_argument("--tie-mode", choices=TIE_MODES, default="stable", help="AP tie handling (PROTOCOLS.md §7.1)")
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per block; bounds peak memory")
    p.add_argument("--json", action="store_true", help="print one JSON object metric -> value")
    p.set_defaults(func=run)


def load_npy(path: str, what: str) -> np.ndarray:
    """Load one .npy file; any failure is a one-line InputError naming the file."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{what} file not found: {file}; pass the path of a .npy file")
    try:
        return np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {what} file {file} as .npy ({msg}); save it with numpy.save") from None


def run(args: argparse.Namespace) -> int:
    query = load_npy(args.query, "query")
    query_labels = load_npy(args.query_labels, "query labels")
    if args.same_set:
        if args.gallery or args.gallery_labels:
            raise InputError("--same-set uses the query files as the gallery; drop --gallery/--gallery-labels")
        gallery, gallery_labels = query, query_labels
    else:
        if not (args.gallery and args.gallery_labels):
            raise InputError("--gallery and --gallery-labels are required unless --same-set is given")
        gallery = load_npy(args.gallery, "gallery")
        gallery_labels = load_npy(args.gallery_labels, "gallery labels")
    result = evaluate_class_retrieval(
        query, query_labels, gallery, gallery_labels, args.metrics.split(","),
        same_set=args.same_set, distance=args.distance, chunk_size=args.chunk_size, tie_mode=args.tie_mode,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def print_table(result: dict[str, float]) -> None:
    """A rich table: metrics with 4 decimals (R@K as percentages, PROTOCOLS.md §8), then the counts."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="retrieval metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.items():
        if name in COUNT_KEYS:
            continue
        text = f"{100 * value:.2f}%" if name.startswith("R@") else f"{value:.4f}"
        table.add_row(name, text)
    for name in COUNT_KEYS:
        table.add_row(name, str(result[name]))
    Console().print(table)
