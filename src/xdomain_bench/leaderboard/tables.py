"""The per-protocol tables every output is made from: one table per dataset/protocol, one row per row identity
(method, backbone, budget, selection tag) in each setting (variant, query domain, gallery), one column per
metric of the protocol, each value mean ± std over seeds with n."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .long import ROW_KEYS
from .metrics import fmt_number, metric_sort_key, order_metrics, protocol_metrics
from .reported import ITR_GALLERY

SETTING = ("variant", "query_domain", "gallery")


@dataclass
class Stat:
    mean: float
    std: float | None = None  # None: one seed, or a reported number
    n: int | None = None  # None: a reported number


@dataclass
class Row:
    kind: str  # "ours" or "reported"
    method: str
    variant: str
    query_domain: str
    gallery: str
    backbone: str
    budget: str = ""
    selection: str = ""
    values: dict[str, Stat] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)  # ours rows: the published number matched exactly
    best: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    implemented: bool = True

    @property
    def setting(self) -> tuple[str, str, str]:
        return (self.variant, self.query_domain, self.gallery)

    def delta(self, metric: str) -> float | None:
        if metric in self.reported and metric in self.values:
            return self.values[metric].mean - self.reported[metric]
        return None

    def label(self) -> str:
        if self.kind == "ours":
            return self.method
        return f"{self.method} [reported{'' if self.implemented else '; not implemented here'}]"


@dataclass
class Table:
    dataset: str
    protocol: str
    primary: str
    metrics: list[str]
    rows: list[Row]

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.protocol}"

    def distinct(self, attr: str, kinds: tuple[str, ...] = ("ours", "reported")) -> list[str]:
        return sorted({getattr(r, attr) for r in self.rows if r.kind in kinds and getattr(r, attr)})

    def settings(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys(r.setting for r in self.rows))


def _itr_view(ours: pd.DataFrame) -> pd.DataFrame:
    """Image-text rows set by source dataset: `oxford_pets/i2t_R@1` becomes metric `i2t_R@1` in setting
    `oxford_pets`; the record's top-level metrics (their unweighted mean over k datasets) sit in setting
    `average<k>`, as papers write `average9`."""
    out = ours.copy()
    split = out["metric"].str.split("/", n=1)
    has_sub = split.str.len() == 2
    out.loc[has_sub, "query_domain"] = split[has_sub].str[0]
    out.loc[has_sub, "metric"] = split[has_sub].str[1]
    per_record = ["method", "variant", "backbone", "budget", "selection", "seed"]
    counts = (ours[has_sub].assign(sub=split[has_sub].str[0]).groupby(per_record)["sub"].nunique())
    for idx in out.index[~has_sub]:
        n = counts.get(tuple(out.loc[idx, per_record]))
        if n:  # a record without per-dataset metrics keeps its own query domain
            out.loc[idx, "query_domain"] = f"average{n}"
    out["gallery"] = ITR_GALLERY
    return out


def _aggregate(ours: pd.DataFrame) -> dict[tuple, Row]:
    rows: dict[tuple, Row] = {}
    for key, grp in ours.groupby(ROW_KEYS + ["metric"], sort=False, dropna=False):
        ident = dict(zip(ROW_KEYS, key[:-1]))
        row = rows.setdefault(tuple(key[:-1]), Row(
            kind="ours", method=ident["method"], variant=ident["variant"], query_domain=str(ident["query_domain"]),
            gallery=str(ident["gallery"]), backbone=ident["backbone"], budget=ident["budget"],
            selection=ident["selection"]))
        vals = grp["value"].to_numpy(dtype=float)
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        row.values[key[-1]] = Stat(float(vals.mean()), std, len(vals))
    return rows


def build_tables(long: pd.DataFrame, reported: pd.DataFrame | None, status: list[dict[str, Any]]) -> list[Table]:
    """Per-protocol tables from the long rows (ours, with domain averages), the normalised reported numbers and
    the status entries (n/a, failed, missing cells)."""
    tables = []
    ours_all = long[long["source"] == "ours"]
    keys = sorted(set(zip(ours_all["dataset"], ours_all["protocol"]))
                  | {(s["dataset"], s["protocol"]) for s in status})
    for dataset, protocol in keys:
        info = protocol_metrics(dataset, protocol)
        ours = ours_all[(ours_all["dataset"] == dataset) & (ours_all["protocol"] == protocol)]
        if info is not None and info.task == "itr":
            ours = _itr_view(ours)
        rows = _aggregate(ours)
        rep = None if reported is None else reported[(reported["dataset"] == dataset)
                                                     & (reported["protocol"] == protocol)]
        extra = _join_reported(rows, rep) if rep is not None else []
        all_rows = list(rows.values()) + extra
        _attach_status(all_rows, [s for s in status if (s["dataset"], s["protocol"]) == (dataset, protocol)])
        present = {m for r in all_rows for m in r.values}
        metrics = [m for m in info.metrics if m in present] if info else order_metrics(present)
        primary = info.primary if info else (metrics[0] if metrics else "")
        table = Table(dataset, protocol, primary, metrics, _sorted(all_rows, primary))
        mark_best(table)
        tables.append(table)
    return tables


def _join_reported(rows: dict[tuple, Row], rep: pd.DataFrame) -> list[Row]:
    """Each published number joins every ours row of identical setting, method and backbone that has the metric;
    the others make `reported` rows of their own (no delta)."""
    extra: dict[tuple, Row] = {}
    for r in rep.to_dict("records"):
        hits = [row for row in rows.values() if row.method == r["method"] and row.backbone == r["backbone"]
                and row.setting == (r["variant"], r["query_domain"], r["gallery"]) and r["metric"] in row.values]
        for row in hits:
            row.reported[r["metric"]] = r["value"]
            if r["reference"] not in row.references:
                row.references.append(r["reference"])
        if hits:
            continue
        key = (r["method"], r["backbone"], r["variant"], r["query_domain"], r["gallery"])
        row = extra.setdefault(key, Row(kind="reported", method=r["method"], variant=r["variant"],
                                        query_domain=r["query_domain"], gallery=r["gallery"], backbone=r["backbone"],
                                        budget="published", implemented=bool(r["implemented"])))
        row.values[r["metric"]] = Stat(r["value"])
        if r["reference"] not in row.references:
            row.references.append(r["reference"])
    return list(extra.values())


def _attach_status(rows: list[Row], status: list[dict[str, Any]]) -> None:
    """A cell without metrics shows in its row (beside seeds that did finish), or in a row of its own placed in
    its setting: the held-out domain's, or the headline one (an image-text protocol's average)."""
    for st in status:
        same_variant = [r.setting for r in rows if r.variant == st["variant"] and r.kind == "ours"]
        setting = _status_setting(st, same_variant)
        row = next((r for r in rows if r.kind == "ours" and r.setting == setting and (r.method, r.backbone, r.budget)
                    == (st["method"], st["backbone"], st["budget"]) and not r.selection), None)
        if row is None:
            row = Row(kind="ours", method=st["method"], variant=setting[0], query_domain=setting[1],
                      gallery=setting[2], backbone=st["backbone"], budget=st["budget"])
            rows.append(row)
        if st["text"] not in row.notes:
            row.notes.append(st["text"])


def _status_setting(st: dict[str, Any], settings: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    holdout, gallery = st.get("holdout"), st.get("gallery")
    candidates = [s for s in dict.fromkeys(settings) if not gallery or s[2] in (gallery, ITR_GALLERY)]
    if holdout:
        candidates = [s for s in candidates if s[1] == holdout]
    else:  # the headline setting: an average where there is one (image-text), else the only one
        candidates.sort(key=lambda s: not s[1].startswith("average"))
    return candidates[0] if candidates else (st["variant"], holdout or "-", gallery or "-")


def _setting_order(setting: tuple[str, str, str]) -> tuple:
    variant, query_domain, gallery = setting
    return (variant, query_domain.startswith("average"), query_domain, gallery)


def _sorted(rows: list[Row], primary: str) -> list[Row]:
    """By setting; then ours by the primary metric (best first), test-selected rows, cells without metrics,
    reported numbers."""
    def key(r: Row):
        stat = r.values.get(primary)
        value = -stat.mean if stat is not None else math.inf
        if r.kind == "reported":
            group = 3
        else:
            group = 2 if not r.values else (1 if r.selection else 0)  # tagged rows after the ranked ones
        return (_setting_order(r.setting), group, value, r.method, r.backbone, r.budget, r.selection)

    return sorted(rows, key=key)


def mark_best(table: Table) -> None:
    """Per setting and column, the best mean (as shown) of our rows; tagged rows (test-selected,
    nonstandard) never compete."""
    for setting in table.settings():
        rivals = [r for r in table.rows if r.setting == setting and r.kind == "ours" and not r.selection]
        for metric in table.metrics:
            shown = {id(r): fmt_number(metric, r.values[metric].mean) for r in rivals if metric in r.values}
            if not shown:
                continue
            top = max(shown.values(), key=float)
            for r in rivals:
                if shown.get(id(r)) == top:
                    r.best.add(metric)


def all_metrics(tables: list[Table]) -> list[str]:
    return sorted({m for t in tables for m in t.metrics}, key=metric_sort_key)
