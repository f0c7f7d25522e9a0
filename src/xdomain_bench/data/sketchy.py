"""Sketchy-Extended (PROTOCOLS.md §3): sketch queries, extended-photo gallery, UᶜCDR class splits.

Also holds the helpers shared with TU-Berlin (`tuberlin.py`): class-folder scanning, the
class-split → role mapping, image checks and count checks for `verify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .base import DatasetAdapter, VerifyReport, read_class_list, register_dataset
from .completeness import ALLOW_OPTION, check_complete, missing_notes
from .images import load_image
from .listing import MAX_LISTED, is_image_name, list_subdirs, listing_sha256, scandir_names, short_list
from .manifest import Manifest, assemble
from .sampling import sample_split
from .synth.sketch_pairs import check_scale, first_n, read_synth_marker, write_sketch_photo_tree

SKETCH, PHOTO = "sketch", "extended_photo"
TX = "tx_000000000000"
VARIANTS = ("clean", "paper")


# --- helpers shared with TU-Berlin -------------------------------------------------------------
def scan_class_folder(folder: Path) -> tuple[list[str], list[str]]:
    """(image names, skipped names) directly inside `folder`, both sorted (PROTOCOLS §1.2 listing rule)."""
    images, skipped = [], []
    for entry in scandir_names(folder):
        (images if entry.is_file() and is_image_name(entry.name) else skipped).append(entry.name)
    return sorted(images), sorted(skipped)


def scan_domain(dataset_dir: Path, rel: str, folders: Iterable[str] | None = None, prefix: str | None = None
                ) -> tuple[dict[str, list[str]], list[str]]:
    """{class folder: sorted relpaths} under `<dataset_dir>/<rel>/`, plus the skipped relpaths.

    Relpaths start with `prefix` (default `rel`): a layout whose files sit deeper than the canonical
    form (Sketchy's archived `sketch/tx_000000000000/`) is listed under its canonical prefix."""
    base = dataset_dir / rel
    head = rel if prefix is None else prefix
    out: dict[str, list[str]] = {}
    skipped: list[str] = []
    for name in (list_subdirs(base) if folders is None else folders):
        images, skip = scan_class_folder(base / name)
        out[name] = [f"{head}/{name}/{f}" for f in images]
        skipped += [f"{head}/{name}/{f}" for f in skip]
    return out, skipped


def split_records(listing: Mapping[str, Mapping[str, Sequence[str]]], query_domain: str,
                  split_of: Mapping[str, str], class_ids: Mapping[str, int]) -> list[dict[str, Any]]:
    """Manifest records for a sketch→photo protocol.

    `listing`: {domain: {class: relpaths}}; `split_of`: class → 'train' | 'val' | 'test' (classes
    absent from it are not used). Query-domain files of val/test classes become val_query/query,
    the other domain's become val_gallery/gallery.
    """
    records = []
    for domain, by_class in listing.items():
        is_query = domain == query_domain
        role_of = {"train": "train", "val": "val_query" if is_query else "val_gallery",
                   "test": "query" if is_query else "gallery"}
        for cls, files in by_class.items():
            if cls not in split_of:
                continue
            role = role_of[split_of[cls]]
            records += [{"relpath": f, "class_name": cls, "class_id": class_ids[cls], "domain": domain,
                         "role": role} for f in files]
    return records


def check_variant_and_options(variant: str, holdout: str | None, options: Mapping[str, Any],
                              known: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the common arguments; returns the options with defaults filled in."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant '{variant}'; known variants: {', '.join(VARIANTS)}")
    if holdout is not None:
        raise ConfigError(f"this protocol has no held-out domain; got holdout='{holdout}', pass none")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}")
    return {**known, **options}


def image_problems(dataset_dir: Path, relpaths: Iterable[str], limit: int = 200) -> list[str]:
    """Decode every image (PIL `.load()`); one line per zero-byte, truncated or unreadable file."""
    problems: list[str] = []
    bad = 0
    for rel in relpaths:
        try:
            load_image(dataset_dir / rel)
        except DataError as exc:
            bad += 1
            if len(problems) < limit:
                problems.append(str(exc))
    if bad > limit:
        problems.append(f"{bad - limit} more unreadable images under {dataset_dir} not listed")
    return problems


def count_problems(where: str, actual: int, expected: int, exact: bool, tolerance: float) -> list[str]:
    """A one-line problem when a count differs from the expected one (beyond `tolerance` if not exact)."""
    if exact and actual != expected:
        return [f"{where}: {actual} files, expected exactly {expected}"]
    if not exact and abs(actual - expected) > tolerance * expected:
        return [f"{where}: {actual} files, expected about {expected} (±{tolerance:.0%}); the tree looks incomplete"]
    return []


# --- the adapter -------------------------------------------------------------------------------
@register_dataset("sketchy")
class SketchyAdapter(DatasetAdapter):
    """Sketchy-Extended: `sketch/<class>/` (or `sketch/tx_000000000000/<class>/`) and `extended_photo/<class>/`.

    Manifest relpaths are canonical (`sketch/<class>/<file>`, the flattened form) in both layouts, so a
    flattened and an archived copy of the same images give byte-identical manifests."""

    name = "sketchy"
    folder = "Sketchy"

    def all_classes(self) -> list[str]:
        """The 125 class folder names (after the upstream renames), sorted: class id = index."""
        return sorted(read_class_list(self.card["class_list"]))

    def split_classes(self, protocol: str) -> dict[str, list[str]]:
        """{'train', 'val', 'test'} class lists; recomputes the upstream val rule and asserts the card's val list."""
        self.protocol_info(protocol)
        p = self.card["protocols"][protocol]
        classes = self.all_classes()
        test = read_class_list(p["test_classes"])
        unknown = sorted(set(test) - set(classes))
        if unknown:
            raise DataError(f"{p['test_classes']}: test classes {short_list(unknown)} are not in "
                            f"{self.card['class_list']}; the shipped lists are inconsistent")
        trval = sorted(set(classes) - set(test))
        rule = self.card["val_rule"]
        train, val = sample_split(trval, rule["train_frac"], rule["seed"])
        if sorted(val) != sorted(p["val_classes"]):
            raise DataError(f"datasets/sketchy.yaml: the upstream val rule gives {val} for {protocol}, but the card "
                            f"lists {sorted(p['val_classes'])}; the class list or the card is wrong")
        return {"train": sorted(train), "val": sorted(val), "test": test}

    def sketch_dir(self, dataset_dir: Path) -> str:
        """`sketch` (flattened, as upstream expects) or `sketch/tx_000000000000` (as archived)."""
        base = dataset_dir / SKETCH
        subdirs = list_subdirs(base)
        tx = [d for d in subdirs if d.startswith("tx_")]
        if TX in tx:
            plain = [d for d in subdirs if not d.startswith("tx_")]
            if plain:
                raise DataError(f"{base} holds both class folders ({short_list(plain)}) and {TX}/; "
                                "keep one layout (flatten it or leave it as archived)")
            return f"{SKETCH}/{TX}"
        if tx:
            raise DataError(f"{base} holds augmentation variants ({short_list(tx)}) but not {TX}/; "
                            f"Sketchy-Extended uses {TX} only")
        return SKETCH

    def _check_folders(self, dataset_dir: Path, rel: str, folders: Sequence[str]) -> list[str]:
        """Problems: hyphenated (not renamed) folders and folders outside the class list."""
        problems = []
        renames = self.card["hyphen_renames"]
        known = set(self.all_classes())
        for name in folders:
            path = dataset_dir / rel / name
            if "-" in name:
                fix = renames.get(name, name.replace("-", "_"))
                problems.append(f"{path}: hyphenated class folder; rename it to '{fix}' in both sketch and "
                                f"extended_photo (the upstream prepare step renames {', '.join(renames)}); "
                                "`python -m xdomain_bench.data.sketchy prepare ROOT` does it")
            elif name not in known:
                problems.append(f"{path}: class folder '{name}' is not one of the 125 Sketchy classes "
                                f"({self.card['class_list']}); remove or rename it")
        return problems

    def _listing(self, dataset_dir: Path) -> tuple[dict[str, dict[str, list[str]]], list[str], str]:
        """({domain: {class: relpaths}}, skipped relpaths, sketch dir); raises on a bad tree."""
        listing: dict[str, dict[str, list[str]]] = {}
        skipped: list[str] = []
        sketch_rel = self.sketch_dir(dataset_dir)
        for domain, rel in ((SKETCH, sketch_rel), (PHOTO, PHOTO)):
            if not (dataset_dir / rel).is_dir():
                raise DataError(f"missing domain folder {dataset_dir / rel}; expected {self.layout_hint()}")
            folders = list_subdirs(dataset_dir / rel)
            problems = self._check_folders(dataset_dir, rel, folders)
            if problems:
                raise DataError(problems[0] + (f" ({len(problems) - 1} more such folders)" if len(problems) > 1 else ""))
            listing[domain], skip = scan_domain(dataset_dir, rel, folders, prefix=domain)
            skipped += skip
        return listing, skipped, sketch_rel

    def file_paths(self, root: str | Path, relpaths: Sequence[str]) -> list[Path]:
        """Canonical `sketch/<class>/<file>` relpaths resolve into `sketch/tx_000000000000/` in an
        archived (unflattened) tree (PROTOCOLS §3.1); everything else is relative to the dataset folder."""
        ds = self.dataset_dir(root)
        sketch_rel = self.sketch_dir(ds)
        head = SKETCH + "/"
        if sketch_rel == SKETCH:
            return [ds / r for r in relpaths]
        return [ds / (sketch_rel + r[len(SKETCH):] if r.startswith(head) else r) for r in relpaths]

    def missing_parts(self, root: str | Path, protocol: str, holdout: str | None = None) -> list[str]:
        """Class folders (canonical `sketch/<class>`, `extended_photo/<class>`) of the 125 classes, or of a
        synthetic tree's marker, that the tree lacks; a missing domain folder is `<domain>/`."""
        ds = self.dataset_dir(root)
        marker = read_synth_marker(ds)
        wanted = marker["classes"] if marker else self.all_classes()
        missing: list[str] = []
        for domain, rel in ((SKETCH, self.sketch_dir(ds)), (PHOTO, PHOTO)):
            if not (ds / rel).is_dir():
                missing.append(f"{domain}/")
                continue
            have = set(list_subdirs(ds / rel))
            missing += [f"{domain}/{c}" for c in wanted if c not in have]
        return missing

    def build_manifest(self, root: str | Path, protocol: str, variant: str = "clean",
                       holdout: str | None = None, **options: Any) -> Manifest:
        opts = check_variant_and_options(variant, holdout, options, {ALLOW_OPTION: False})
        split = self.split_classes(protocol)
        ds = self.dataset_dir(root)
        listing, skipped, _ = self._listing(ds)
        synthetic = read_synth_marker(ds) is not None
        missing = check_complete(self, root, protocol, None, opts[ALLOW_OPTION])
        split_of = {c: s for s, cs in split.items() for c in cs}
        if variant == "paper":
            split_of.update({c: "train" for c in split["val"]})
        class_ids = {c: i for i, c in enumerate(self.all_classes())}
        records = split_records(listing, SKETCH, split_of, class_ids)
        notes = {"no_val_split": True, "test_selected_upstream": True,
                 "train_includes_val_classes": True} if variant == "paper" else {}
        notes.update(missing_notes(missing))
        meta = {
            "dataset": self.name, "protocol": protocol, "variant": variant, "holdout": None, "options": opts,
            "seeds": {"val_class_rule": self.card["val_rule"]},
            "listing_sha256": listing_sha256(f for d in listing.values() for fs in d.values() for f in fs),
            "inverted_domains": sorted(self.inverted_domains(variant)), "notes": notes,
            "classes": {"train": split["train"] + (split["val"] if variant == "paper" else []),
                        "val": [] if variant == "paper" else split["val"], "test": sorted(split["test"])},
            "class_names": self.all_classes(), "synthetic": synthetic,
            "skipped_files": len(skipped), "skipped_examples": skipped[:MAX_LISTED],
        }
        return assemble(records, meta)

    def verify(self, root: str | Path) -> VerifyReport:
        report = VerifyReport(self.name, str(root))
        try:
            ds = self.dataset_dir(root)
            marker = read_synth_marker(ds)
            sketch_rel = self.sketch_dir(ds)
        except DataError as exc:
            report.problems.append(str(exc))
            return report
        expected = marker["expected_counts"] if marker else self.card["expected_counts"]
        wanted = marker["classes"] if marker else self.all_classes()
        for domain, rel in ((SKETCH, sketch_rel), (PHOTO, PHOTO)):
            base = ds / rel
            if not base.is_dir():
                report.problems.append(f"missing domain folder {base}; expected {self.layout_hint()}")
                continue
            folders = list_subdirs(base)
            report.problems += self._check_folders(ds, rel, folders)
            missing = sorted(set(wanted) - set(folders))
            if missing:
                report.problems.append(f"{base}: {len(missing)} class folders missing: {short_list(missing)}")
            extra = sorted(set(folders) - set(wanted) - {f for f in folders if "-" in f} & set(self.all_classes()))
            if extra:
                report.problems.append(f"{base}: class folders not in this synthetic tree's class list: "
                                       f"{short_list(extra)}")
            by_class, skipped = scan_domain(ds, rel, [f for f in folders if f in set(wanted)])
            files = [f for fs in by_class.values() for f in fs]
            report.counts[f"{domain}_classes"] = len(by_class)
            report.counts[f"{domain}_files"] = len(files)
            report.counts[f"{domain}_skipped"] = len(skipped)
            report.problems += count_problems(str(base), len(files), expected["files"][domain], bool(marker),
                                              float(expected.get("tolerance", 0.0)))
            report.problems += image_problems(ds, files)
        return report

    def synth(self, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
        """Synthetic Sketchy tree (flattened layout) with real class names; tiny keeps every role non-empty."""
        check_scale(scale)
        cfg = self.card["synthetic"][scale]
        all_classes = read_class_list(self.card["class_list"])
        if scale == "small":
            classes = list(all_classes)
        else:
            splits = {p: self.split_classes(p) for p in self.protocols()}
            picked: list[str] = []
            for p in self.protocols():
                picked += first_n(read_class_list(self.card["protocols"][p]["test_classes"]), cfg["test"], set(picked))
                picked += first_n(self.card["protocols"][p]["val_classes"], cfg["val"], set(picked))
            always_train = set(all_classes) - {c for s in splits.values() for c in s["val"] + s["test"]}
            picked += first_n([c for c in all_classes if c in always_train], cfg["train"], set(picked))
            classes = picked
        n = cfg["per_class"]
        return write_sketch_photo_tree(root, self.folder, all_classes, classes,
                                       {SKETCH: ("sketch", ".png", n), PHOTO: ("photo", ".jpg", n)},
                                       seed, salt=self.name, extra={"dataset": self.name, "scale": scale})


def prepare(root: str | Path) -> list[tuple[str, str]]:
    """Apply the upstream class-folder renames (hot-air_balloon → hot_air_balloon, ...) in place."""
    adapter = SketchyAdapter()
    ds = adapter.dataset_dir(root)
    done = []
    for rel in (adapter.sketch_dir(ds), PHOTO):
        for old, new in adapter.card["hyphen_renames"].items():
            src, dst = ds / rel / old, ds / rel / new
            if src.is_dir():
                if dst.exists():
                    raise DataError(f"cannot rename {src}: {dst} already exists; merge or remove one of them")
                src.rename(dst)
                done.append((str(src), str(dst)))
    return done


if __name__ == "__main__":  # python -m xdomain_bench.data.sketchy prepare ROOT
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "prepare":
        sys.exit("usage: python -m xdomain_bench.data.sketchy prepare DATA_ROOT")
    try:
        for a, b in prepare(sys.argv[2]):
            print(f"renamed {a} -> {b}")
    except DataError as exc:
        sys.exit(f"error: {exc}")
