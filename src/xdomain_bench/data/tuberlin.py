"""TU-Berlin-Extended (PROTOCOLS.md §4): sketch queries, photo gallery, 200/20/30 class split.

The loader takes its classes from the tree (class id = index in the sorted, normalised class list)
and applies the upstream name normalisation itself, so both a prepared tree (`flying_bird/`) and a
raw one (`flying bird/`, photo folder `flyingbird/`, `.JPEG` files) load. Manifest relpaths are the
canonical (prepared) forms, `<domain>/<normalised class>/<name>.jpg`, so a raw and a prepared tree give
byte-identical manifests; `file_paths` maps them back to the files as stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import DatasetAdapter, VerifyReport, read_class_list, register_dataset
from .completeness import ALLOW_OPTION, check_complete, missing_notes
from .listing import list_subdirs, listing_sha256
from .manifest import Manifest, assemble
from .sketchy import (
    MAX_LISTED,
    check_variant_and_options,
    count_problems,
    image_problems,
    scan_class_folder,
    scan_domain,
    short_list,
    split_records,
)
from .synth.sketch_pairs import check_scale, first_n, read_synth_marker, write_sketch_photo_tree

SKETCHES, IMAGES = "sketches", "images"


def normalise_name(name: str) -> str:
    """Spaces and hyphens become `_`; parentheses are kept (`bear (animal)` → `bear_(animal)`)."""
    return re.sub(r"[ -]", "_", name)


def canonical_file_name(name: str) -> str:
    """`.JPEG`/`.jpeg` become `.jpg` and extensions lower case, as the upstream prepare step leaves them."""
    stem, ext = os.path.splitext(name)
    ext = ext.lower()
    return stem + (".jpg" if ext == ".jpeg" else ext)


def _squash(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def photo_class_map(folders: Iterable[str], sketch_classes: Iterable[str], renames: Mapping[str, str]
                    ) -> dict[str, str]:
    """Photo folder → class: upstream typo map, then `normalise_name`, then the sketch class whose
    letters match (`flyingbird` → `flying_bird`). Unmatched folders map to their normalised name."""
    classes = set(sketch_classes)
    by_squash: dict[str, list[str]] = {}
    for c in classes:
        by_squash.setdefault(_squash(c), []).append(c)
    out = {}
    for raw in folders:
        name = normalise_name(renames.get(raw, raw))
        if name not in classes and len(by_squash.get(_squash(name), [])) == 1:
            name = by_squash[_squash(name)][0]
        out[raw] = name
    return out


def _rekey(dataset_dir: Path, rel: str, mapping: Mapping[str, str]) -> dict[str, str]:
    """Invert raw→class, refusing two raw folders that normalise to the same class."""
    seen: dict[str, str] = {}
    for raw, cls in mapping.items():
        if cls in seen:
            raise DataError(f"{dataset_dir / rel}: folders '{seen[cls]}' and '{raw}' both normalise to class "
                            f"'{cls}'; merge them or remove one")
        seen[cls] = raw
    return seen


@register_dataset("tuberlin")
class TUBerlinAdapter(DatasetAdapter):
    """TU-Berlin-Extended: `sketches/<class>/*.png` and `images/<class>/*.jpg` under `TUBerlin/` (or `TU-Berlin/`)."""

    name = "tuberlin"
    folder = "TUBerlin"
    folder_aliases = ("TU-Berlin",)

    def split_lists(self, protocol: str) -> tuple[list[str], list[str]]:
        """(test classes, val classes) from the shipped upstream lists (sizes checked against the card)."""
        self.protocol_info(protocol)
        p = self.card["protocols"][protocol]
        test, val = read_class_list(p["test_classes"]), read_class_list(p["val_classes"])
        if (len(test), len(val)) != (p["class_counts"]["test"], p["class_counts"]["val"]) or set(test) & set(val):
            raise DataError(f"{p['test_classes']} / {p['val_classes']}: expected {p['class_counts']['test']} test and "
                            f"{p['class_counts']['val']} disjoint val classes; the shipped lists are corrupt")
        return test, val

    def class_folders(self, dataset_dir: Path) -> dict[str, dict[str, str]]:
        """{domain: {class: raw folder}} after normalisation; raises on a bad tree."""
        for rel in (SKETCHES, IMAGES):
            if not (dataset_dir / rel).is_dir():
                raise DataError(f"missing domain folder {dataset_dir / rel}; expected {self.layout_hint()}")
        sketch = _rekey(dataset_dir, SKETCHES, {f: normalise_name(f) for f in list_subdirs(dataset_dir / SKETCHES)})
        photo_map = photo_class_map(list_subdirs(dataset_dir / IMAGES), sketch, self.card["photo_folder_renames"])
        return {SKETCHES: sketch, IMAGES: _rekey(dataset_dir, IMAGES, photo_map)}

    def _listing(self, dataset_dir: Path) -> tuple[dict[str, dict[str, list[str]]], list[str], dict[str, str]]:
        """({domain: {class: canonical relpaths}}, skipped canonical relpaths, {canonical: real relpath}
        for the files stored under another name); raises on a bad tree."""
        folders = self.class_folders(dataset_dir)
        orphans = sorted(set(folders[IMAGES]) - set(folders[SKETCHES]))
        if orphans:
            raws = [folders[IMAGES][c] for c in orphans]
            raise DataError(f"{dataset_dir / IMAGES}: photo folders {short_list(raws)} match no sketches/ class "
                            "(even after the upstream name normalisation); rename them to their sketch class")
        listing: dict[str, dict[str, list[str]]] = {}
        skipped: list[str] = []
        real_of: dict[str, str] = {}
        for rel, by_class in folders.items():
            listing[rel] = {}
            for cls, raw in sorted(by_class.items()):
                names, skip = scan_class_folder(dataset_dir / rel / raw)
                files = {}
                for name in names:
                    canon = f"{rel}/{cls}/{canonical_file_name(name)}"
                    if canon in files:
                        raise DataError(f"{dataset_dir / rel / raw}: files '{files[canon].rsplit('/', 1)[1]}' and "
                                        f"'{name}' both normalise to '{canon.rsplit('/', 1)[1]}'; keep one of them")
                    files[canon] = f"{rel}/{raw}/{name}"
                listing[rel][cls] = sorted(files)
                real_of.update((c, r) for c, r in files.items() if c != r)
                skipped += [f"{rel}/{cls}/{f}" for f in skip]
        return listing, skipped, real_of

    def file_paths(self, root: str | Path, relpaths: Sequence[str]) -> list[Path]:
        """Canonical relpaths (normalised class folder, `.jpg`) -> the files as stored, raw or prepared."""
        ds = self.dataset_dir(root)
        if all((ds / r).is_file() for r in relpaths):
            return [ds / r for r in relpaths]
        real_of = self._listing(ds)[2]
        return [ds / real_of.get(r, r) for r in relpaths]

    def missing_parts(self, root: str | Path, protocol: str, holdout: str | None = None) -> list[str]:
        """Classes of the card's list (or a synthetic tree's marker) without a sketches/ or images/ folder,
        as canonical `<domain>/<class>` (raw folder names count after normalisation)."""
        ds = self.dataset_dir(root)
        marker = read_synth_marker(ds)
        wanted = marker["classes"] if marker else read_class_list(self.card["class_list"])
        folders = self.class_folders(ds)
        return [f"{rel}/{c}" for rel in (SKETCHES, IMAGES) for c in wanted if c not in folders[rel]]

    def build_manifest(self, root: str | Path, protocol: str, variant: str = "clean",
                       holdout: str | None = None, **options: Any) -> Manifest:
        opts = check_variant_and_options(variant, holdout, options, {ALLOW_OPTION: False})
        test, val = self.split_lists(protocol)
        ds = self.dataset_dir(root)
        listing, skipped, _ = self._listing(ds)
        classes = sorted(listing[SKETCHES])
        synthetic = read_synth_marker(ds) is not None
        missing = check_complete(self, root, protocol, None, opts[ALLOW_OPTION])
        split_of = {c: "train" for c in classes}
        split_of.update({c: "test" for c in test})
        split_of.update({c: "train" if variant == "paper" else "val" for c in val})
        class_ids = {c: i for i, c in enumerate(classes)}
        records = split_records(listing, SKETCHES, split_of, class_ids)
        notes = {"no_val_split": True, "test_selected_upstream": True, "train_includes_val_classes": True,
                 "sketches_not_inverted": True} if variant == "paper" else {}
        notes.update(missing_notes(missing))
        meta = {
            "dataset": self.name, "protocol": protocol, "variant": variant, "holdout": None, "options": opts,
            "seeds": {},
            "listing_sha256": listing_sha256(f for d in listing.values() for fs in d.values() for f in fs),
            "inverted_domains": sorted(self.inverted_domains(variant)), "notes": notes,
            "classes": {s: sorted(c for c in classes if split_of[c] == s) for s in ("train", "val", "test")},
            "class_names": classes, "synthetic": synthetic,
            "skipped_files": len(skipped), "skipped_examples": skipped[:MAX_LISTED],
        }
        return assemble(records, meta)

    def verify(self, root: str | Path) -> VerifyReport:
        report = VerifyReport(self.name, str(root))
        try:
            ds = self.dataset_dir(root)
            marker = read_synth_marker(ds)
            folders = self.class_folders(ds)
        except DataError as exc:
            report.problems.append(str(exc))
            return report
        expected = marker["expected_counts"] if marker else self.card["expected_counts"]
        wanted = set(marker["classes"] if marker else read_class_list(self.card["class_list"]))
        source = "this synthetic tree's class list" if marker else f"{self.card['class_list']} (derived by us)"
        for rel, by_class in folders.items():
            base = ds / rel
            missing = sorted(wanted - set(by_class))
            if missing:
                report.problems.append(f"{base}: {len(missing)} class folders missing: {short_list(missing)}")
            extra = sorted(set(by_class) - wanted)
            if extra:
                raws = [by_class[c] for c in extra]
                report.problems.append(f"{base}: class folders {short_list(raws)} are not in {source}")
            scanned, skipped = scan_domain(ds, rel, by_class.values())
            files = [f for fs in scanned.values() for f in fs]
            report.counts[f"{rel}_classes"] = len(by_class)
            report.counts[f"{rel}_files"] = len(files)
            report.counts[f"{rel}_skipped"] = len(skipped)
            report.counts[f"{rel}_unnormalised_folders"] = sum(raw != cls for cls, raw in by_class.items())
            exact = bool(marker) or rel in expected.get("exact_domains", [])
            report.problems += count_problems(str(base), len(files), expected["files"][rel], exact,
                                              float(expected.get("tolerance", 0.0)))
            per_class = expected.get("per_class", {}).get(rel)
            if per_class is not None:
                off = sorted(by_class[c] for c in by_class if len(scanned[by_class[c]]) != per_class)
                if off:
                    report.problems.append(f"{base}: class folders {short_list(off)} do not hold exactly "
                                           f"{per_class} files each")
            report.problems += image_problems(ds, files)
        return report

    def synth(self, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
        """Synthetic TU-Berlin tree (prepared, normalised layout) with the real class names."""
        check_scale(scale)
        cfg = self.card["synthetic"][scale]
        all_classes = read_class_list(self.card["class_list"])
        test, val = self.split_lists(self.default_protocol())
        if scale == "small":
            classes = list(all_classes)
        else:
            classes = first_n(test, cfg["test"]) + first_n(val, cfg["val"])
            classes += first_n(all_classes, cfg["train"], set(test) | set(val))
        n = cfg["per_class"]
        return write_sketch_photo_tree(root, self.folder, all_classes, classes,
                                       {SKETCHES: ("sketch", ".png", n), IMAGES: ("photo", ".jpg", n)},
                                       seed, salt=self.name, extra={"dataset": self.name, "scale": scale})
