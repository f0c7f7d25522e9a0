"""`xbench list KIND` and `xbench show method|suite NAME`: what the suite holds, one line each."""

from __future__ import annotations

import argparse

from rich.table import Table

from .errors import ConfigError

KINDS = ("methods", "datasets", "protocols", "backbones", "metrics", "suites")

BACKBONE_HELP = {  # backend -> (spec forms, description)
    "tiny-clip": ("tiny-clip[:preset=vit-b-16|vit-b-32,KEY=INT,...]",
                  "seeded tiny CLIP with random weights: for tests and smoke runs, never for results"),
    "demo-clip": ("demo-clip[:KEY=VALUE,...]",
                  "small CLIP pretrained on the synthetic world (cached; xbench pretrain-demo)"),
    "hf-clip": ("hf-clip:<hub id or folder>",
                "Hugging Face CLIP weights, e.g. hf-clip:openai/clip-vit-base-patch32 (--allow-download to fetch)"),
}

METRICS = (  # form, definition: the ranking metrics of eval.metrics, then the image-text ones of eval.itr
    ("Prec@k", "precision at k: relevant items in the top k over min(k, gallery size)"),
    ("mAP@k", "average precision over the top k, normalised by the relevant items found there (form A)"),
    ("mAP@k:B", "AP@k normalised by min(k, relevant items)"),
    ("mAP@k:C", "AP@k normalised by all relevant items"),
    ("mAP@all", "average precision over the whole ranking"),
    ("R@K", "Recall@K of metric learning: share of queries with a relevant item in the top K"),
    ("Recall@k", "recall of information retrieval: relevant items in the top k over all relevant items"),
    ("MAP@R", "mean average precision at R, R = the query's relevant items (Musgrave et al. 2020)"),
    ("R-Precision", "precision at R, R = the query's relevant items"),
    ("i2t_R@K, t2i_R@K", "image-text retrieval (x100): image queries with a matching caption in the top K (i2t), "
     "caption queries with their image in the top K (t2i)"),
    ("RSUM", "sum of i2t and t2i R@1, R@5 and R@10"),
    ("mean_R@1", "mean of i2t_R@1 and t2i_R@1"),
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list methods, datasets, protocols, backbones, metrics or suites",
                       description="One line per item: its name and what it is.")
    p.add_argument("kind", choices=KINDS, help="what to list")
    p.set_defaults(func=list_command)

    p = sub.add_parser("show", help="show a method's resolved card or a suite's expanded matrix",
                       description="method NAME: every resolved option, the card layer that set it and whether the "
                                   "value is published (paper or code) or our choice. suite NAME: every cell.")
    p.add_argument("what", choices=("method", "suite"), help="method or suite")
    p.add_argument("name", help="method name, or suite name or file")
    p.add_argument("--method-variant", help="method: the card variant to resolve (default: the card's default)")
    p.add_argument("--dataset", help="method: apply the card's overrides for this dataset")
    p.add_argument("--only", action="append", metavar="KEY=A,B,...", help="suite: restrict the matrix, as in run")
    p.set_defaults(func=show_command)


def _console():
    from .data.cli import output_console

    return output_console()


def _table(title: str, *headers: str) -> Table:
    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h, overflow="fold")
    return table


def list_command(args: argparse.Namespace) -> int:
    table = {"methods": _methods, "datasets": _datasets, "protocols": _protocols, "backbones": _backbones,
             "metrics": _metrics, "suites": _suites}[args.kind]()
    _console().print(table)
    return 0


def _methods() -> Table:
    from .methods.base import method_names
    from .methods.config import load_card

    table = _table("methods (xbench show method NAME)", "name", "description")
    for name in method_names():
        card = load_card(name)
        table.add_row(name, str(card.get("title") or card.get("summary") or ""))
    return table


def _datasets() -> Table:
    from .data.base import dataset_names, get_dataset

    table = _table("datasets", "name", "description", "protocols")
    for name in dataset_names():
        adapter = get_dataset(name)
        doc = (type(adapter).__doc__ or "").strip().splitlines()
        table.add_row(name, str(adapter.card.get("title") or (doc[0] if doc else "")), ", ".join(adapter.protocols()))
    return table


def _protocols() -> Table:
    from .data.base import dataset_names, get_dataset

    table = _table("protocols (xbench run --dataset D --protocol P)", "dataset", "protocol", "description")
    for name in dataset_names():
        adapter = get_dataset(name)
        for protocol in adapter.protocols():
            info = adapter.protocol_info(protocol)
            task = "image-text retrieval" if info.task == "itr" else "class-relevance retrieval"
            same = ", queries are the gallery" if info.same_set else ""
            default = " (default)" if protocol == adapter.default_protocol() else ""
            table.add_row(name, protocol + default, f"{task}{same}; primary {info.primary_metric}, "
                          f"selection {info.selection_metric}; metrics {', '.join(info.metrics)}")
    return table


def backbone_choices() -> str:
    from .vlm.backends import BACKENDS

    return ", ".join(BACKBONE_HELP.get(n, (f"{n}:...",))[0] for n in BACKENDS.names())


def _backbones() -> Table:
    from .vlm.backends import BACKENDS

    table = _table("backbones (--backbone SPEC)", "name", "spec", "description")
    for name in BACKENDS.names():
        doc = (BACKENDS.get(name).__doc__ or "").strip().splitlines()
        spec, text = BACKBONE_HELP.get(name, (f"{name}:...", doc[0] if doc else ""))
        table.add_row(name, spec, text)
    return table


def _metrics() -> Table:
    table = _table("metrics (k, K positive integers)", "metric", "definition")
    for form, text in METRICS:
        table.add_row(form, text)
    return table


def _suites() -> Table:
    import yaml

    from .paths import card_files, suites_dir

    table = _table("suites (xbench run --suite NAME; xbench show suite NAME)", "name", "description")
    for name, path in card_files("suites", suites_dir()).items():
        text = " ".join(str((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", "")).split())
        table.add_row(name, text.split(". ")[0].rstrip("."))
    return table


def show_command(args: argparse.Namespace) -> int:
    from .cards_view import method_table, suite_table

    if args.what == "method":
        if args.only:
            raise ConfigError("--only goes with xbench show suite")
        _console().print(method_table(args.name, args.method_variant, args.dataset))
    else:
        if args.method_variant or args.dataset:
            raise ConfigError("--method-variant and --dataset go with xbench show method")
        _console().print(suite_table(args.name, args.only))
    return 0
