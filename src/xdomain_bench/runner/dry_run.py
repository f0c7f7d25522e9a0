"""`xbench run ... --dry-run`: every cell's resolved config and budget, from the real training-set sizes.

Nothing is trained and nothing is written under the output folder; the manifests it builds to count the
training rows go to the manifest cache, as a real run's would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .records import Cell


def plan_cells(cells: list[Cell], data_root: str | Path) -> list[dict[str, Any]]:
    """One plan per cell: its identity, the method config and the resolved budget (or why it is n/a)."""
    from ..methods.base import get_method_class
    from ..methods.config import resolve_config
    from .execute import cell_data_options, plan_budget

    infos: dict[str, Any] = {}
    plans = []
    for cell in cells:
        method_cls = get_method_class(cell.method)
        cfg = resolve_config(cell.method, cell.method_variant, cell.dataset, cell.method_overrides)
        options, test_selection = cell_data_options(cell, method_cls, cfg)
        key = json.dumps([cell.dataset, cell.protocol, cell.variant, cell.holdout, options], sort_keys=True, default=str)
        if key not in infos:
            infos[key] = _data_info(cell, data_root, options)
        info, n_train, has_val = infos[key]
        plan = {"method": cell.method, "dataset": cell.dataset, "protocol": cell.protocol, "variant": cell.variant,
                "holdout": cell.holdout, "gallery": cell.data_options.get("gallery"), "seed": cell.seed,
                "backbone": cell.backbone, "method_variant": cfg.get("variant"), "cell": cell.slug(),
                "selection": "val" if has_val else "test (allowed)" if test_selection else "none (last weights)",
                "budget": plan_budget(method_cls, cfg, cell, n_train)}
        reason = method_cls.unsupported_reason(info)
        if reason:
            plan["n/a"] = reason
        plans.append(plan)
    return plans


def _data_info(cell: Cell, data_root: str | Path, options: dict[str, Any]):
    """(DataInfo, training rows, has a validation split) of a cell's protocol, from its manifest (no backbone
    is loaded)."""
    from ..data.datamodule import RetrievalDataModule
    from ..vlm.preprocess import ImagePreprocess

    dm = RetrievalDataModule(cell.dataset, data_root, cell.protocol, cell.variant, cell.holdout,
                             preprocess=ImagePreprocess(), seed=cell.seed, **options)
    dm.setup()
    return dm.info, len(dm.role_frame("train")), bool(len(dm.role_frame("val_query")))


def print_plans(plans: list[dict[str, Any]], as_json: bool) -> None:
    """A table (or a JSON list) of the plans on standard output."""
    if as_json:
        print(json.dumps(plans, indent=2, default=str))
        return
    from rich.table import Table

    from ..leaderboard.console import make_console

    table = Table(title=f"{len(plans)} cells (dry run: nothing trained, nothing written)")
    for col in ("method", "dataset/protocol", "variant", "holdout", "gallery", "seed", "budget", "phases"):
        table.add_column(col, overflow="fold")
    for p in plans:
        phases = p.get("n/a") and f"n/a: {p['n/a']}" or "; ".join(
            f"{ph['name']}: {ph['epochs']:.3g} ep = {ph['steps']} steps x {ph['batch_size']} ({ph['source']})"
            for ph in p["budget"]["phases"]) or "no training"
        table.add_row(p["method"], f"{p['dataset']}/{p['protocol']}", p["variant"], str(p["holdout"] or "-"),
                      str(p["gallery"] or "-"), str(p["seed"]), p["budget"]["label"], phases)
    make_console().print(table)
