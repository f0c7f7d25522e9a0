"""FDRD adapter (PROTOCOLS.md §6): released caption files + CoOp images -> `itr` manifests.

Manifest representation (see datasets/fdrd.yaml): each test image is one `query` row and one identical
`gallery` row carrying its captions and hard negatives; `clean` val likewise (`val_query`/`val_gallery`);
relpaths are relative to the data root (`image_root(root)`), whose first component is the CoOp dataset.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .base import DatasetAdapter, VerifyReport, register_dataset
from .fdrd_format import (
    COOP,
    RELEASED_NAME,
    Entry,
    ImageIndex,
    RawEntry,
    aircraft_restore,
    clean_negatives,
    coop_split_classes,
    coop_val_paths,
    infer_category,
    load_json,
    normalise_text,
    parse_released,
    read_canonical,
    resolve_dataset_name,
    resolve_image,
    write_entries,
)
from .images import load_image
from .listing import listing_sha256, scandir_names
from .manifest import Manifest, assemble
from .sampling import sample_split

SYNTH_MARKER = ".xbench_synth.json"


@dataclass
class FdrdVerifyReport(VerifyReport):
    """VerifyReport of FDRD; its warnings (e.g. negative lists of unexpected length) do not fail `ok`."""


@dataclass
class _Loaded:
    """The entries of one CoOp dataset: test, and the train pool (train, plus val from canonical input)."""

    test: list[Entry] = field(default_factory=list)
    pool: list[Entry] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # part ("test" / "train") -> source file


def source_dataset(relpath: str) -> str:
    """The CoOp dataset of a manifest row: the first component of its relpath."""
    return relpath.split("/", 1)[0]


def write_canonical_jsonl(manifest_or_entries: Manifest | list[Entry], path: str | Path) -> list[Path]:
    """Write canonical JSONL (§6.5). A `.jsonl` path gets all entries; a folder gets one file per
    (dataset, split). A manifest contributes its train, val_query and query rows (test = query)."""
    if isinstance(manifest_or_entries, Manifest):
        entries = manifest_entries(manifest_or_entries)
    else:
        entries = list(manifest_or_entries)
    return write_entries(entries, path)


def manifest_entries(manifest: Manifest) -> list[Entry]:
    """Canonical entries of an FDRD manifest (category_id = class_id minus the dataset's offset)."""
    offsets = {d: v["class_offset"] for d, v in manifest.meta.get("datasets", {}).items()}
    split_of = {"train": "train", "val_query": "val", "query": "test"}
    out = []
    for row in manifest.rows.itertuples(index=False):
        if row.role not in split_of:
            continue
        dataset = source_dataset(row.relpath)
        if dataset not in offsets:
            raise DataError(f"manifest row {row.relpath!r}: dataset {dataset!r} missing from the sidecar's "
                            "'datasets'; is this an FDRD manifest?")
        out.append(Entry(str(row.image_id), dataset, split_of[row.role], row.relpath, row.class_name,
                         int(row.class_id) - offsets[dataset], list(row.captions), list(row.hard_negatives)))
    return out


@register_dataset("fdrd")
class FdrdAdapter(DatasetAdapter):
    name = "fdrd"
    folder = "FDRD"

    # --- layout -------------------------------------------------------------------------------------
    def data_root(self, root: str | Path) -> Path:
        """The CoOp data root: `root` itself, or its parent when `root` is the FDRD folder."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"data root does not exist: {root}; expected {self.layout_hint()}")
        if not (root / self.folder).is_dir() and root.name == self.folder:
            return root.parent
        return root

    def image_root(self, root: str | Path) -> Path:
        """Folder that manifest relpaths are relative to: the data root (parent of FDRD/)."""
        return self.data_root(root)

    def listing(self, root: str | Path) -> list[str]:
        """Sorted relpaths of all images under the known CoOp folders present in the data root."""
        data_root = self.data_root(root)
        index = ImageIndex(data_root)
        return [r for d in sorted(COOP) if (data_root / d).is_dir() for r in index.files(d)]

    def listing_sha256(self, root: str | Path) -> str:
        return listing_sha256(self.listing(root))

    # --- manifest -----------------------------------------------------------------------------------
    def build_manifest(self, root: str | Path, protocol: str = "itr", variant: str = "clean",
                       holdout: str | None = None, annotations: Any = None, datasets: Any = None,
                       allow_missing_classes: bool = False, **options: Any) -> Manifest:
        """The `itr` manifest (§6.6) for the selected CoOp datasets; DataError names file and key."""
        self.protocol_info(protocol)
        if variant not in ("clean", "paper"):
            raise ConfigError(f"unknown variant '{variant}'; known variants: clean, paper")
        if holdout is not None:
            raise ConfigError(f"fdrd has no held-out domains; got holdout={holdout!r}, pass none")
        if options:
            raise ConfigError(f"unknown fdrd option(s) {', '.join(sorted(options))}; "
                              "known: annotations, datasets, allow_missing_classes")
        data_root = self.data_root(root)
        ctx = _Context(data_root)
        found = _group(self._sources(root, annotations))
        present = sorted(ds for ds, parts in found.items() if "test" in parts)
        selected = self._select(datasets, present, default_all=annotations is not None, root=data_root)
        loaded = {ds: self._load(ctx, ds, found[ds]) for ds in selected}
        frac = float(self.card["val"]["fallback_fraction"])
        records: list[dict[str, Any]] = []
        class_names: list[str] = []
        info: dict[str, Any] = {}
        for ds in selected:
            part = loaded[ds]
            offset = len(class_names)
            class_names += sorted({e.category for e in part.test})
            val_ids, val_source = (self._val_ids(data_root, ds, part.pool, frac) if variant == "clean"
                                   else (set(), "none"))
            records += _records(part, offset, val_ids, clean=variant == "clean")
            info[ds] = {"class_offset": offset, "num_classes": len(class_names) - offset,
                        "test": len(part.test), "train": len(part.pool) - len(val_ids), "val": len(val_ids),
                        "val_source": val_source, "stats": _stats(part.test),
                        "annotation_files": {k: p.name for k, p in sorted(part.files.items())}}
        meta = {
            "dataset": self.name, "protocol": protocol, "variant": variant, "holdout": None,
            "options": self.identity_options(root, {"annotations": annotations, "datasets": datasets,
                                                    "allow_missing_classes": allow_missing_classes or None}),
            "selected_datasets": selected,
            "seeds": {"val_fallback_seed": "category_id", "val_fallback_fraction": frac},
            "listing_sha256": listing_sha256(r for d in sorted(COOP) if (data_root / d).is_dir()
                                             for r in ctx.index.files(d)),
            "annotations_sha256": _files_sha256(p for ds in selected for p in loaded[ds].files.values()),
            "inverted_domains": [],
            "relpath_base": "data_root",
            "itr_representation": self.card["itr_representation"],
            "class_names": class_names,
            "datasets": info,
            "notes": _notes(variant, selected, info),
        }
        return assemble(records, meta)

    def identity_options(self, root: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """Options as a manifest records them: supplied annotations by the content hash of their files
        (names and bytes), never by the path as typed, so a manifest verifies on any machine."""
        out = {k: _jsonable(v) for k, v in options.items() if v is not None}
        if options.get("annotations") is not None:
            out["annotations"] = "sha256:" + _files_sha256(self._sources(root, options["annotations"]))
        return out

    def write_canonical(self, root: str | Path, out: str | Path, variant: str = "paper",
                        **options: Any) -> list[Path]:
        """Convert the caption files under `root` to canonical JSONL files in folder `out`."""
        return write_canonical_jsonl(self.build_manifest(root, "itr", variant, **options), out)

    def _sources(self, root: str | Path, annotations: Any) -> list[Path]:
        if annotations is None:
            return _scan(self.dataset_dir(root), with_jsonl=False)[0]
        items = annotations if isinstance(annotations, (list, tuple)) else [annotations]
        files: list[Path] = []
        for item in items:
            path = Path(item)
            if not path.exists() and (Path(root) / path).exists():
                path = Path(root) / path
            if path.is_dir():
                files += _scan(path, with_jsonl=True)[0]
            elif path.is_file() and (path.suffix == ".jsonl" or RELEASED_NAME.match(path.name)):
                files.append(path)
            elif path.is_file():
                raise DataError(f"annotation file {path}: name does not say dataset and split; name it like "
                                "pets_test.json / inter_dtd_train.json, or convert it to canonical .jsonl")
            else:
                raise DataError(f"annotations not found: {path}; pass a released .json, a canonical .jsonl "
                                "or a folder of them")
        return files

    def _load(self, ctx: _Context, ds: str, parts: dict[str, list[Path | Entry]]) -> _Loaded:
        """Entries of one dataset from its released files or canonical lines, with ids assigned."""
        part = _Loaded()
        for split, items in sorted(parts.items()):
            for item in items:
                if isinstance(item, Entry):
                    if not ctx.index.exists(ds, item.image_path):
                        raise DataError(f"{item.where}: image {item.image_path} not found under "
                                        f"{ctx.data_root}; fix image_path or put the CoOp images there")
                    part.files[item.split] = Path(item.where.rsplit(":", 1)[0])
                    (part.test if split == "test" else part.pool).append(item)
                    continue
                part.files[split] = item
                for raw in parse_released(item):
                    category, relpath = self._category_and_path(ctx, ds, raw)
                    entry = Entry(raw.key, ds, split, relpath, category, -1, [raw.positive], raw.negative,
                                  where=raw.where)
                    (part.test if split == "test" else part.pool).append(entry)
        _assign_ids(ds, part)
        return part

    def _category_and_path(self, ctx: _Context, ds: str, raw: RawEntry) -> tuple[str, str]:
        """Class (given or inferred, §6.2) and resolved image path (§6.4) of one released entry."""
        category = infer_category(ds, raw, ctx.aircraft_restore() if ds == "fgvc_aircraft" else None)
        relpath = resolve_image(ds, raw, ctx.index)
        if category is None:
            category = ctx.split_classes(ds).get(relpath)
        if category is None:
            raise DataError(f"{raw.where}: no 'class_name' and no rule to infer the class for {ds}; add "
                            f"class_name, or put CoOp's {COOP[ds].split_file} in {ctx.data_root / ds}")
        return category, relpath

    def _select(self, datasets: Any, present: list[str], default_all: bool, root: Path) -> list[str]:
        """Selected CoOp datasets, sorted; each must have test captions."""
        if datasets is None:
            wanted = present if default_all else list(self.card["core_datasets"])
        elif isinstance(datasets, str) and datasets.strip() == "all":
            wanted = present
        else:
            items = datasets.split(",") if isinstance(datasets, str) else list(datasets)
            wanted = [resolve_dataset_name(str(d)) for d in items if str(d).strip()]
        if not wanted:
            raise DataError(f"no FDRD test caption files found for {root}; expected {self.layout_hint()}")
        for ds in wanted:
            if ds not in present:
                tag = COOP[ds].tag
                raise DataError(f"no test captions for {ds}: expected {tag}_test.json or "
                                f"inter_{tag}_test.json under {root / self.folder} (or in annotations=); "
                                f"add it, or pick datasets from those found: {', '.join(present) or 'none'}")
        return sorted(set(wanted))

    def _val_ids(self, data_root: Path, ds: str, pool: list[Entry], frac: float) -> tuple[set[str], str]:
        """`clean` val (§6.6): canonical val lines, else CoOp's val split, else 20 % per category."""
        if any(e.split == "val" for e in pool):
            return {e.image_id for e in pool if e.split == "val"}, "canonical"
        coop_val = coop_val_paths(data_root, ds)
        if coop_val is not None:
            return {e.image_id for e in pool if e.image_path in coop_val}, f"coop:{ds}/{COOP[ds].split_file}"
        by_cat: dict[int, list[str]] = {}
        for e in pool:
            by_cat.setdefault(e.category_id, []).append(e.image_id)
        val: set[str] = set()
        for cid, ids in sorted(by_cat.items()):
            val.update(sample_split(sorted(ids), frac, cid)[0])
        return val, f"fallback:{frac}"

    # --- verify -------------------------------------------------------------------------------------
    def verify(self, root: str | Path) -> FdrdVerifyReport:
        """Caption files, image resolution and decoding, counts against the card (or synth marker)."""
        report = FdrdVerifyReport(self.name, str(root))
        try:
            fdrd_dir = self.dataset_dir(root)
        except DataError as exc:
            report.problems.append(str(exc))
            return report
        data_root = fdrd_dir.parent
        expected = self._expected(fdrd_dir)
        unverified = set(expected.get("unverified", []))
        files, skipped = _scan(fdrd_dir, with_jsonl=False)
        report.warnings += [f"{p}: not a released FDRD caption-file name; ignored" for p in skipped]
        ctx = _Context(data_root)
        images: dict[str, str] = {}
        present: set[str] = set()
        for path in files:
            m = RELEASED_NAME.match(path.name)
            assert m is not None
            ds, split = resolve_dataset_name(m.group(1)), m.group(2)
            errors: list[str] = []
            try:
                raws = parse_released(path, errors)
            except DataError as exc:
                report.problems.append(str(exc))
                continue
            report.problems += errors
            if split == "test":
                present.add(ds)
            report.counts[f"entries:{path.name}"] = len(raws)
            self._check_count(report, f"{path}: {len(raws)} entries", len(raws),
                              expected.get("entries", {}).get(path.name), path.name in unverified)
            self._check_negatives(report, path, raws)
            categories = set()
            for raw in raws:
                try:
                    category, relpath = self._category_and_path(ctx, ds, raw)
                except DataError as exc:
                    report.problems.append(str(exc))
                    continue
                categories.add(category)
                images.setdefault(relpath, raw.where)
            if split == "test":
                self._check_count(report, f"{path}: {len(categories)} classes", len(categories),
                                  expected.get("classes", {}).get(ds), ds in unverified)
            else:
                self._check_val(report, ctx, ds, raws, expected.get("coop", {}).get(ds), ds in unverified)
        for ds in self.card["core_datasets"]:
            if ds not in present:
                report.problems.append(f"{fdrd_dir}: no test captions for core dataset {ds} "
                                       f"({COOP[ds].tag}_test.json); download it from {self.card['source']}")
        for relpath, where in sorted(images.items()):
            try:
                load_image(data_root / relpath)
            except DataError as exc:
                report.problems.append(f"{where}: {exc}")
        report.counts["images_checked"] = len(images)
        return report

    def _expected(self, fdrd_dir: Path) -> dict[str, Any]:
        marker = fdrd_dir / SYNTH_MARKER
        if marker.is_file():
            return dict(load_json(marker).get("expected_counts", {}))
        return dict(self.card["expected_counts"])

    @staticmethod
    def _check_count(report: FdrdVerifyReport, what: str, have: int, want: int | None, soft: bool) -> None:
        if want is None or have == want:
            return
        line = f"{what}, expected {want}" + (" ([unv] figure)" if soft else "; re-download the file")
        (report.warnings if soft else report.problems).append(line)

    def _check_negatives(self, report: FdrdVerifyReport, path: Path, raws: list[RawEntry]) -> None:
        kind = "inter" if path.name.startswith("inter_") else RELEASED_NAME.match(path.name).group(2)
        allowed = set(self.card["negatives_per_entry"][kind])
        odd = Counter(len(r.negative) for r in raws if len(r.negative) not in allowed)
        for n, count in sorted(odd.items()):
            first = next(r.key for r in raws if len(r.negative) == n)
            report.warnings.append(f"{path}: {count} entries have {n} negatives (expected "
                                   f"{' or '.join(map(str, sorted(allowed)))}), e.g. key {first!r}")

    def _check_val(self, report: FdrdVerifyReport, ctx: _Context, ds: str, raws: list[RawEntry],
                   want: dict[str, int] | None, soft: bool) -> None:
        """Train entries inside CoOp's val split, against CoOp's val size."""
        data_root = ctx.data_root
        try:
            coop_val = coop_val_paths(data_root, ds)
        except DataError as exc:
            report.problems.append(str(exc))
            return
        if coop_val is None:
            report.warnings.append(f"{data_root / ds / COOP[ds].split_file} missing: clean val falls back to "
                                   "a seeded 20 % per category")
            return
        n_val = 0
        for raw in raws:
            try:
                n_val += resolve_image(ds, raw, ctx.index) in coop_val
            except DataError:
                continue  # reported above
        report.counts[f"val:{ds}"] = n_val
        if want:
            self._check_count(report, f"{ds}: {n_val} train entries in CoOp's val split", n_val,
                              want["val"], soft)

    # --- synth --------------------------------------------------------------------------------------
    def synth(self, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
        from .synth.fdrd import write_synth

        return write_synth(Path(root), scale=scale, seed=seed,
                           image_size=int(self.card["synth"]["image_size"]))


# --- helpers -----------------------------------------------------------------------------------------
class _Context:
    """Per-call caches: the image index, the aircraft name restoration, CoOp split-file classes."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self.index = ImageIndex(data_root)
        self._restore: dict[str, str] | None = None
        self._classes: dict[str, dict[str, str]] = {}

    def aircraft_restore(self) -> dict[str, str]:
        if self._restore is None:
            self._restore = aircraft_restore(self.data_root)
        return self._restore

    def split_classes(self, ds: str) -> dict[str, str]:
        if ds not in self._classes:
            self._classes[ds] = coop_split_classes(self.data_root, ds)
        return self._classes[ds]


def _group(files: list[Path]) -> dict[str, dict[str, list[Path | Entry]]]:
    """dataset -> part ("test" / "train") -> released files or canonical entries; one source per part."""
    found: dict[str, dict[str, list[Path | Entry]]] = {}
    owner: dict[tuple[str, str], Path] = {}

    def claim(ds: str, split: str, path: Path) -> list[Path | Entry]:
        """One source file per (dataset, split); canonical val lines join the train part."""
        have = owner.setdefault((ds, split), path)
        if have != path:
            raise DataError(f"two caption files supply {ds} {split}: {have} and {path}; keep one of them "
                            "or pass annotations=... naming the one to use")
        return found.setdefault(ds, {}).setdefault("test" if split == "test" else "train", [])

    for path in files:
        if path.suffix == ".jsonl":
            for e in read_canonical(path):
                claim(e.dataset, e.split, path).append(e)
        else:
            m = RELEASED_NAME.match(path.name)
            assert m is not None
            claim(resolve_dataset_name(m.group(1)), m.group(2), path).append(path)
    return found


def _scan(folder: Path, with_jsonl: bool) -> tuple[list[Path], list[Path]]:
    """Caption files in `folder` and its `train/`, `test/` sub-folders: (used, skipped), sorted."""
    used, skipped = [], []
    for sub in (folder, folder / "train", folder / "test"):
        if not sub.is_dir():
            continue
        for path in sorted(sub / e.name for e in scandir_names(sub)):
            if not path.is_file() or path.name.startswith("."):
                continue
            if RELEASED_NAME.match(path.name) or (with_jsonl and path.suffix == ".jsonl"):
                used.append(path)
            elif path.suffix in (".json", ".jsonl"):
                skipped.append(path)
    return used, skipped


def _records(part: _Loaded, offset: int, val_ids: set[str], clean: bool) -> list[dict[str, Any]]:
    """Rows of one dataset: test -> query + gallery, val -> val_query + val_gallery, rest -> train."""
    out = []
    for e in part.test + part.pool:
        if e.split == "test":
            roles: tuple[str, ...] = ("query", "gallery")
        else:
            roles = ("val_query", "val_gallery") if e.image_id in val_ids else ("train",)
        negs = clean_negatives(e.hard_negatives, e.captions) if clean else list(e.hard_negatives)
        for role in roles:
            out.append({"relpath": e.image_path, "class_name": e.category, "class_id": offset + e.category_id,
                        "domain": "photo", "role": role, "captions": list(e.captions), "hard_negatives": negs,
                        "image_id": e.image_id})
    return out


def _assign_ids(ds: str, part: _Loaded) -> None:
    """category_id = index in the sorted test categories (§6.5); checks canonical ids and unique ids."""
    ids = {c: i for i, c in enumerate(sorted({e.category for e in part.test}))}
    seen: dict[str, str] = {}
    for e in part.test + part.pool:
        if e.category not in ids:
            raise DataError(f"{e.where}: category {e.category!r} of {ds} does not occur in its test file; "
                            "class ids come from the test categories, so fix the category or the test file")
        if e.category_id not in (-1, ids[e.category]):
            raise DataError(f"{e.where}: category_id {e.category_id} for {e.category!r}, but its index in "
                            f"the sorted test categories is {ids[e.category]}; regenerate the file")
        if e.image_id in seen:
            raise DataError(f"{e.where}: image_id {e.image_id!r} of {ds} also occurs at {seen[e.image_id]}; "
                            "image ids must be unique within a dataset")
        seen[e.image_id] = e.where
        e.category_id = ids[e.category]
    for entries in (part.test, part.pool):
        entries.sort(key=lambda e: e.image_id)


def _stats(test: list[Entry]) -> dict[str, int]:
    """Quirk counts of §6.3 in a test file (duplicate captions, bad negatives)."""
    groups = Counter(normalise_text(c) for e in test for c in e.captions)
    dup = [n for n in groups.values() if n > 1]
    own = sum(any(normalise_text(n) in {normalise_text(c) for c in e.captions} for n in e.hard_negatives)
              for e in test)
    rep = sum(len({normalise_text(n) for n in e.hard_negatives}) < len(e.hard_negatives) for e in test)
    return {"duplicate_caption_groups": len(dup), "duplicate_caption_images": sum(dup),
            "negatives_containing_caption": own, "negatives_with_repeats": rep}


def _notes(variant: str, selected: list[str], info: dict[str, Any]) -> dict[str, Any]:
    """Where this manifest differs from the other variant; copied into every result record."""
    notes: dict[str, Any] = {"fdrd_datasets": selected}
    if variant == "paper":
        notes.update(itr_relevance="instance", validation="none (trains on all *_train.json entries)",
                     hard_negatives="as released")
    else:
        notes.update(itr_relevance="equivalent_captions", hard_negatives="cleaned",
                     validation={ds: v["val_source"] for ds, v in info.items()})
    return notes


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _files_sha256(paths: Any) -> str:
    digest = hashlib.sha256()
    for path in sorted({Path(p) for p in paths}, key=lambda p: p.name):
        digest.update(path.name.encode("utf-8") + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


