"""`xbench eval-embeddings`: retrieval metrics for saved query/gallery embeddings (.npy files)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from .engine import DISTANCES, SIMILARITIES, TIE_MODES, evaluate_class_retrieval
from .similarity import resolve_similarity

DEFAULT_METRICS = "mAP@200,Prec@200,mAP@all"
SIMILARITY_HELP = (
    "how a query scores a gallery item (default cosine): cosine of L2-normalised rows (float32); "
    "neg_sq_euclidean = -|q-g|^2 and exp_neg_euclidean = exp(-|q-g|) on the rows as given, in float64 "
    "(exp_neg_euclidean is SnMpNet's evaluation; beyond a distance of ~745 its scores underflow to 0 and tie)"
)
DISTANCE_HELP = "older spelling: cosine = --similarity cosine, l2 = --similarity neg_sq_euclidean (given both, they must agree)"
TIE_HELP = (
    "AP tie handling (PROTOCOLS.md §7.1): stable = ties by ascending gallery index; sklearn = scikit-learn's "
    "tie-aware AP (SnMpNet), on the stable top-k slice for @k. sklearn @k still depends on the gallery order "
    "when a tie group straddles rank k: with heavy ties (binary or hashed codes, underflowing exp scores) "
    "report both modes and say which"
)
EPILOG = (
    "Besides the metrics, the output counts queries with no relevant item in the gallery "
    "(n_queries_no_relevant) and, per cut-off k, with none in the top k (n_queries_no_hit@k). Every query "
    "counts in the means; a peer number that drops the no-hit queries is mean * n_queries / "
    "(n_queries - n_queries_no_hit@k)."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-embeddings",
        help="class-retrieval metrics for saved embeddings",
        description="Compute retrieval metrics (PROTOCOLS.md §7) from .npy embeddings and labels.",
        epilog=EPILOG,
    )
    p.add_argument("--query", required=True, help="query embeddings, (Nq, D) .npy")
    p.add_argument("--query-labels", required=True, help="query labels, (Nq,) .npy of ints or strings")
    p.add_argument("--gallery", help="gallery embeddings, (Ng, D) .npy (omit with --same-set)")
    p.add_argument("--gallery-labels", help="gallery labels, (Ng,) .npy (omit with --same-set)")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated metric names (default {DEFAULT_METRICS})")
    p.add_argument("--same-set", action="store_true", help="queries are the gallery; each query excludes itself")
    p.add_argument("--similarity", choices=SIMILARITIES, help=SIMILARITY_HELP)
    p.add_argument("--distance", choices=DISTANCES, help=DISTANCE_HELP)
    p.add_argument("--tie-mode", choices=TIE_MODES, default="stable", help=TIE_HELP)
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
    try:
        similarity = resolve_similarity(args.similarity, args.distance)
    except ConfigError as exc:  # a contradiction between two flags is bad command-line input
        raise InputError(f"--distance {args.distance} contradicts --similarity {args.similarity}; pass one") from exc
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
        same_set=args.same_set, similarity=similarity, chunk_size=args.chunk_size, tie_mode=args.tie_mode,
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
    counts = [name for name in result if name.startswith("n_")]
    for name, value in result.items():
        if name in counts:
            continue
        text = f"{100 * value:.2f}%" if name.startswith("R@") else f"{value:.4f}"
        table.add_row(name, text)
    for name in counts:
        table.add_row(name, str(result[name]))
    Console().print(table)
