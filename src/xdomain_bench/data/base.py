"""The dataset-adapter contract: one subclass per dataset, registered by name.

An adapter knows a dataset's official layout. It builds manifests for its protocols, verifies a
tree against the card's expected counts, and writes a synthetic twin of the layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError, unknown_name
from ..paths import dataset_cards_dir, find_resource, splits_dir
from ..registry import Registry, load_entry_points
from .manifest import Manifest

DATASETS: Registry[type[DatasetAdapter]] = Registry("dataset")


def register_dataset(name: str):
    return DATASETS.register(name)


@dataclass
class VerifyReport:
    """Result of `xbench data verify`: problems are one line each, naming the file (and line)."""

    dataset: str
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth reading, but do not fail `ok`

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ProtocolInfo:
    """What the evaluator and methods need to know about one protocol."""

    task: str  # "class" (class-relevance retrieval) or "itr" (image-text retrieval)
    same_set: bool  # query set is the gallery set (self-exclusion by index)
    primary_metric: str
    metrics: tuple[str, ...]
    selection_metric: str


def read_class_list(name: str) -> list[str]:
    """A shipped split list (datasets/splits/NAME), read with splitlines()."""
    path = find_resource("datasets/splits", name, splits_dir())
    if not path.is_file():
        raise DataError(f"class list missing: {path}; the checkout is incomplete")
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip() or line != line.strip():
            raise DataError(f"{path}:{i}: malformed class-list line {line!r}; expected one class name per line")
    return lines


def load_card(name: str) -> dict[str, Any]:
    path = find_resource("datasets", f"{name}.yaml", dataset_cards_dir())
    if not path.is_file():
        raise DataError(f"dataset card missing: {path}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class DatasetAdapter(ABC):
    """Subclasses set `name`, `folder` (dataset folder under the data root) and implement the rest."""

    name: str = ""
    folder: str = ""
    folder_aliases: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.card = load_card(self.name)

    # --- layout -------------------------------------------------------------------------------
    def dataset_dir(self, root: str | Path) -> Path:
        """`<root>/<folder>` (or an alias, or root itself if it already is the dataset folder)."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"data root does not exist: {root}; expected {self.layout_hint()}")
        for name in (self.folder, *self.folder_aliases):
            if (root / name).is_dir():
                return root / name
        if root.name in (self.folder, *self.folder_aliases):
            return root
        raise DataError(f"no {self.folder}/ folder under {root}; expected {self.layout_hint()}")

    def image_root(self, root: str | Path) -> Path:
        """Folder that manifest relpaths are relative to (the dataset folder unless overridden)."""
        return self.dataset_dir(root)

    def file_paths(self, root: str | Path, relpaths: Sequence[str]) -> list[Path]:
        """The files on disk for manifest relpaths. Relpaths are canonical (PROTOCOLS §3.1, §4.1);
        adapters whose accepted layouts store files elsewhere map them back here."""
        base = self.image_root(root)
        return [base / r for r in relpaths]

    def missing_parts(self, root: str | Path, protocol: str, holdout: str | None = None) -> list[str]:
        """Domain and class folders the card (or a synthetic tree's marker) expects but the tree lacks,
        as paths relative to the dataset folder; [] for a complete tree."""
        return []

    def identity_options(self, root: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """Protocol options in the form a manifest sidecar records them (identity of the manifest)."""
        return dict(options)

    def layout_hint(self) -> str:
        return self.card.get("layout_hint", f"<root>/{self.folder}/...")

    # --- protocols ----------------------------------------------------------------------------
    def protocols(self) -> list[str]:
        return list(self.card["protocols"])

    def protocol_info(self, protocol: str) -> ProtocolInfo:
        if protocol not in self.card["protocols"]:
            raise unknown_name(f"{self.name} protocol", protocol, self.protocols())
        p = self.card["protocols"][protocol]
        return ProtocolInfo(p["task"], bool(p.get("same_set", False)), p["primary_metric"],
                            tuple(p["metrics"]), p["selection_metric"])

    def default_protocol(self) -> str:
        return self.card.get("default_protocol", self.protocols()[0])

    def holdouts(self, protocol: str) -> list[str | None]:
        """Held-out query domains a suite may expand over; [None] when the protocol has none."""
        return [None]

    def default_holdout(self, protocol: str) -> str | None:
        return self.holdouts(protocol)[0]

    def inverted_domains(self, variant: str) -> set[str]:
        return set(self.card.get("inverted_domains", {}).get(variant, []))

    # --- the three jobs -----------------------------------------------------------------------
    @abstractmethod
    def build_manifest(self, root: str | Path, protocol: str, variant: str = "clean",
                       holdout: str | None = None, **options: Any) -> Manifest:
        """Deterministic manifest from the sorted listing; raises DataError naming file (and line)."""

    @abstractmethod
    def verify(self, root: str | Path) -> VerifyReport:
        """Compare the tree with the card's expected counts; list every problem."""

    @abstractmethod
    def synth(self, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
        """Write a synthetic tree in the official layout under `root`; returns the dataset folder."""


def get_dataset(name: str) -> DatasetAdapter:
    _import_all()
    return DATASETS.get(name)()


def dataset_names() -> list[str]:
    _import_all()
    return DATASETS.names()


def _import_all() -> None:
    import importlib

    for mod in ("domainnet", "sketchy", "tuberlin", "cub", "fdrd"):
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise
    load_entry_points("xdomain_bench.datasets", register_dataset, DATASETS)  # third-party datasets
