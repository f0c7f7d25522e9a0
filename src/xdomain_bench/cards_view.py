"""What `xbench show` prints: a method's resolved card with provenance, a suite's expanded matrix."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted leaves; lists and empty mappings stay values."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def provenance_kind(text: str | None) -> str:
    """published (paper or code), ours, mixed, or note, from how a card's provenance entry starts."""
    if text is None:
        return "unmarked"
    t = " ".join(str(text).lower().split())
    published = t.startswith(("paper", "code"))
    ours = t.startswith(("ours", "not published")) or "our choice" in t or t.startswith("paper/ours")
    if published and ours:
        return "mixed"
    if published:
        return "published (" + ("code" if t.startswith("code") else "paper") + ")"
    return "ours" if ours else "note"


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _provenance_entry(key: str, provenance: dict[str, Any]) -> str | None:
    """The card's provenance key for a dotted option: itself or its longest dotted prefix."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in provenance:
            return ".".join(parts[:n])
    return None


def method_rows(name: str, variant: str | None = None, dataset: str | None = None) -> tuple[str, list[dict]]:
    """(the variant resolved, one row per option: key, value, card layer that set it, provenance kind and text).
    Provenance entries that name no option (architecture choices) follow, without a value."""
    from .methods.base import get_method_class
    from .methods.config import _card_layers, load_card, resolve_config

    get_method_class(name)  # an unknown name lists the known ones
    if dataset is not None:
        from .data.base import dataset_names
        from .errors import unknown_name

        if dataset not in dataset_names():
            raise unknown_name("dataset", dataset, dataset_names())
    card = load_card(name)
    cfg = resolve_config(name, variant, dataset)
    variant = cfg.pop("variant")
    layers = [("defaults", card["defaults"])]
    layers += [(where.split(" ", 1)[1], update) for where, update in _card_layers(name, card, variant, dataset)]
    provenance = card.get("provenance") or {}
    rows, used = [], set()
    for key, value in flatten(cfg).items():
        set_by = [where for where, update in layers if any(_overlaps(key, k) for k in flatten(update or {}))]
        entry = _provenance_entry(key, provenance)
        used.add(entry)
        text = provenance.get(entry) if entry else None
        rows.append(dict(key=key, value=value, set_by=set_by[-1] if set_by else "defaults",
                         kind=provenance_kind(text), source="" if text is None else " ".join(str(text).split())))
    for entry, text in provenance.items():
        if entry not in used and not any(_overlaps(entry, r["key"]) for r in rows):
            rows.append(dict(key=entry, value=None, set_by="-", kind=provenance_kind(text),
                             source=" ".join(str(text).split())))
    return variant, rows


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def method_table(name: str, variant: str | None, dataset: str | None) -> Table:
    from .methods.config import load_card

    variant, rows = method_rows(name, variant, dataset)
    title = load_card(name).get("title") or name
    table = Table(title=f"{name}: {title} (variant {variant}, dataset {dataset or 'none'}); published = the paper "
                  "or its released code, ours = our choice where neither says", title_justify="left")
    for col in ("option", "value", "set by", "provenance", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["key"], "-" if r["value"] is None and r["set_by"] == "-" else _text(r["value"]), r["set_by"],
                      r["kind"], r["source"])
    return table


def suite_table(name: str, only: list[str] | None) -> Table:
    from .runner.suite import expand_suite, load_suite, parse_only

    suite = load_suite(name)
    cells = expand_suite(suite, only=parse_only(only))
    table = Table(title=f"suite {suite['name']} ({suite['_path']}): {len(cells)} cells", title_justify="left")
    for col in ("#", "method", "dataset", "protocol", "variant", "holdout", "seed", "backbone", "budget", "options"):
        table.add_column(col, overflow="fold")
    for i, c in enumerate(cells, 1):
        options = {k: v for k, v in (("method variant", c.method_variant), ("data", c.data_options),
                                     ("method", c.method_overrides)) if v}
        table.add_row(str(i), c.method, c.dataset, c.protocol, c.variant, c.holdout or "-", str(c.seed), c.backbone,
                      c.budget, "; ".join(f"{k}: {_text(v)}" for k, v in options.items()))
    return table
