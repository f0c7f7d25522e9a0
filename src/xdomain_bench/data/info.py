"""What methods and the evaluator need to know about one (dataset, protocol, variant, holdout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .base import DatasetAdapter
from .manifest import Manifest


@dataclass
class DataInfo:
    """Static description of a set-up DataModule; class ids are global (manifest `class_id`)."""

    dataset: str
    protocol: str
    variant: str
    holdout: str | None
    class_names: list[str]  # indexed by global class_id
    train_class_ids: list[int]  # sorted global ids of classes with train rows; `label` indexes this
    train_domains: list[str]  # sorted domains of train rows; `domain_id` indexes this
    task: str  # "class" or "itr"
    same_set: bool
    has_captions: bool
    has_boxes: bool
    primary_metric: str
    metrics: tuple[str, ...]
    selection_metric: str
    inverted_domains: tuple[str, ...]
    notes: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, str] = field(default_factory=dict)  # a paper profile's upstream similarity / tie_mode

    @property
    def num_train_classes(self) -> int:
        return len(self.train_class_ids)

    @property
    def train_class_names(self) -> list[str]:
        """Names of the training classes, in `label` order."""
        return [self.class_names[i] for i in self.train_class_ids]

    @property
    def single_domain(self) -> bool:
        """True when training has at most one domain (no domain labels to exploit)."""
        return len(self.train_domains) <= 1


def class_names_from_rows(rows: pd.DataFrame) -> list[str]:
    """`class_names[class_id]` from the manifest rows; ids absent from the manifest get ''."""
    if rows.empty:
        return []
    pairs = rows[["class_id", "class_name"]].drop_duplicates()
    names = [""] * (int(pairs["class_id"].max()) + 1)
    for cid, name in zip(pairs["class_id"], pairs["class_name"]):
        names[int(cid)] = str(name)
    return names


def build_info(adapter: DatasetAdapter, manifest: Manifest, protocol: str, variant: str,
               holdout: str | None, notes: dict[str, Any] | None = None) -> DataInfo:
    """Derive DataInfo from the adapter's card and the manifest."""
    proto = adapter.protocol_info(protocol)
    rows = manifest.rows
    train = rows[rows["role"] == "train"]
    names = manifest.meta.get("class_names") or class_names_from_rows(rows)
    has_boxes = "box" in rows and any(b is not None and len(b) == 4 for b in rows["box"])
    has_captions = "captions" in rows and any(bool(c) for c in rows["captions"])
    all_notes = dict(manifest.meta.get("notes", {}))
    all_notes.update(notes or {})
    evaluation = profile_evaluation(adapter, manifest.meta.get("paper_profile"))
    if evaluation:
        all_notes["evaluation"] = (f"paper profile '{manifest.meta['paper_profile']}' scores as its upstream code: "
                                   + ", ".join(f"{k}={v}" for k, v in sorted(evaluation.items())))
    return DataInfo(
        dataset=adapter.name,
        protocol=protocol,
        variant=variant,
        holdout=holdout,
        class_names=list(names),
        train_class_ids=sorted({int(c) for c in train["class_id"]}),
        train_domains=sorted(set(train["domain"])),
        task=proto.task,
        same_set=bool(manifest.meta.get("same_set", proto.same_set)),  # an option may change it
        has_captions=has_captions,
        has_boxes=has_boxes,
        primary_metric=proto.primary_metric,
        metrics=proto.metrics,
        selection_metric=proto.selection_metric,
        inverted_domains=tuple(sorted(adapter.inverted_domains(variant))),
        notes=all_notes,
        evaluation=evaluation,
    )


def profile_evaluation(adapter: DatasetAdapter, profile: str | None) -> dict[str, str]:
    """The card's `paper_profiles.<profile>.evaluation` (similarity / tie_mode of the upstream code), or {}."""
    if not profile:
        return {}
    return dict(((adapter.card.get("paper_profiles") or {}).get(profile) or {}).get("evaluation") or {})
