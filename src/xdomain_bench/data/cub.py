"""CUB-200-2011 (PROTOCOLS.md §5): same-set fine-grained retrieval, class-disjoint and closed-set.

Labels, splits and boxes come from the official metadata files, parsed strictly: a malformed line is
reported as `file:line`, and every image listed in images.txt must exist. Images are not decoded here
(`verify` does that).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .base import DatasetAdapter, VerifyReport, register_dataset
from .completeness import ALLOW_OPTION
from .listing import listing_sha256
from .manifest import Manifest, assemble
from .sampling import sample_split
from .sketchy import MAX_LISTED, check_variant_and_options, image_problems, scan_domain
from .synth.birds import write_cub_tree
from .synth.sketch_pairs import check_scale, read_synth_marker

FILES = {  # file -> expected line format
    "classes.txt": "<class_id> <class_name>",
    "images.txt": "<image_id> <image_name>",
    "image_class_labels.txt": "<image_id> <class_id>",
    "train_test_split.txt": "<image_id> <is_training_image>",
    "bounding_boxes.txt": "<image_id> <x> <y> <width> <height>",
}
FIX = "fix the line or re-extract CUB_200_2011.tgz"


class _Sink:
    """Collects problems (verify) or raises the first one (build_manifest)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        if self.strict:
            raise DataError(message)
        self.problems.append(message)


@dataclass
class CubMeta:
    """Parsed metadata; list index = id − 1."""

    class_names: list[str] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    is_train: list[bool] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)  # x0, y0, x1, y1


def _lines(path: Path, sink: _Sink) -> list[tuple[int, list[str], str]]:
    """(line number, whitespace fields, raw line) for every line; [] (with a problem) if unreadable."""
    if not path.is_file():
        sink.add(f"{path}: metadata file missing; expected lines '{FILES[path.name]}' ({FIX})")
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        sink.add(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); {FIX}")
        return []
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # blank lines at the very end are harmless; anywhere else they are malformed
    return [(i, line.split(), line) for i, line in enumerate(lines, 1)]


def _parse(path: Path, n: int | None, sink: _Sink, value: Callable[[list[str]], Any]) -> list[Any]:
    """Values of an id-per-line file whose ids must be 1, 2, 3, ... (one per line, in order).

    `n`: the number of ids expected (None: as many as the file has). `value` maps the fields after the
    id to the stored value and raises ValueError for a bad one.
    """
    out: list[Any] = []
    fmt = FILES[path.name]
    rows = _lines(path, sink)
    for lineno, parts, raw in rows:
        where = f"{path}:{lineno}"
        if n is not None and lineno > n:
            sink.add(f"{where}: line {lineno} but images.txt lists only {n} images; the metadata files disagree")
            break
        out.append(None)  # replaced below when the line is valid (keeps index = id - 1 in verify mode)
        if len(parts) != len(fmt.split()):
            sink.add(f"{where}: expected '{fmt}', got {raw!r}; {FIX}")
        elif parts[0] != str(lineno):
            sink.add(f"{where}: id {parts[0]!r} where {lineno} was expected (ids are 1-based, one per line, "
                     f"in order); {FIX}")
        else:
            try:
                out[-1] = value(parts[1:])
            except ValueError as exc:
                sink.add(f"{where}: {exc} in {raw!r}; expected '{fmt}'; {FIX}")
    if rows and n is not None and len(rows) < n:
        sink.add(f"{path}: {len(rows)} lines but images.txt lists {n} images; the metadata files disagree")
    return out


def _int_in(lo: int, hi: int, what: str) -> Callable[[list[str]], int]:
    def parse(fields: list[str]) -> int:
        if not fields[0].isdigit() or not lo <= int(fields[0]) <= hi:
            raise ValueError(f"{what} {fields[0]!r} is not an integer in {lo}..{hi}")
        return int(fields[0])
    return parse


def _box(fields: list[str]) -> list[float]:
    try:
        x, y, w, h = (float(v) for v in fields)
    except ValueError:
        raise ValueError("box values are not numbers") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or x < 0 or y < 0 or w <= 0 or h <= 0:
        raise ValueError("box needs x, y >= 0 and width, height > 0")
    return [x, y, x + w, y + h]


def _image_name(fields: list[str]) -> str:
    parts = fields[0].split("/")
    if len(parts) != 2 or not all(parts) or ".." in parts:
        raise ValueError(f"image name {fields[0]!r} is not '<class folder>/<file>'")
    return fields[0]


def read_box_file(path: str | Path) -> dict[int, list[float]]:
    """Pixel xyxy boxes by image id from a file in bounding_boxes.txt's format (`<image_id> <x> <y> <width>
    <height>`, original pixels). Unlike the release's own file, ids may be sparse (e.g. a detector's output
    with some images left out) but must be unique; a bad line raises DataError naming `file:line`."""
    path = Path(path)
    fmt = FILES["bounding_boxes.txt"]
    if not path.is_file():
        raise DataError(f"box file not found: {path}; expected lines '{fmt}'")
    out: dict[int, list[float]] = {}
    for lineno, parts, raw in _lines(path, _Sink(strict=True)):
        where = f"{path}:{lineno}"
        if len(parts) != 5 or not parts[0].isdigit() or int(parts[0]) < 1:
            raise DataError(f"{where}: expected '{fmt}' with a positive integer id, got {raw!r}")
        if int(parts[0]) in out:
            raise DataError(f"{where}: image id {parts[0]} appears twice; keep one box per image")
        try:
            out[int(parts[0])] = _box(parts[1:])
        except ValueError as exc:
            raise DataError(f"{where}: {exc} in {raw!r}; expected '{fmt}'") from None
    return out


def parse_metadata(dataset_dir: Path, n_classes: int, strict: bool = True) -> tuple[CubMeta, list[str]]:
    """Parse and cross-check the five metadata files; (meta, problems). Strict mode raises the first problem."""
    sink = _Sink(strict)
    meta = CubMeta()
    meta.class_names = _parse(dataset_dir / "classes.txt", None, sink, lambda f: f[0])
    if meta.class_names and len(meta.class_names) != n_classes:
        sink.add(f"{dataset_dir / 'classes.txt'}: {len(meta.class_names)} classes, expected {n_classes}; "
                 "this is not the CUB_200_2011 release")
    meta.image_names = _parse(dataset_dir / "images.txt", None, sink, _image_name)
    n = len(meta.image_names)
    meta.labels = _parse(dataset_dir / "image_class_labels.txt", n, sink,
                         _int_in(1, max(len(meta.class_names), 1), "class id"))
    meta.is_train = [v == 1 if v is not None else None for v in
                     _parse(dataset_dir / "train_test_split.txt", n, sink, _int_in(0, 1, "is_training_image"))]
    meta.boxes = _parse(dataset_dir / "bounding_boxes.txt", n, sink, _box)
    for i, (name, label) in enumerate(zip(meta.image_names, meta.labels), 1):
        if name is not None and label is not None and name.split("/")[0] != meta.class_names[label - 1]:
            sink.add(f"{dataset_dir / 'images.txt'}:{i}: image {name!r} lies outside its class folder "
                     f"'{meta.class_names[label - 1]}' (image_class_labels.txt:{i} says class {label}); {FIX}")
    return meta, sink.problems


@register_dataset("cub")
class CUBAdapter(DatasetAdapter):
    """CUB-200-2011: `images/<NNN.Class>/<file>.jpg` plus the official metadata files."""

    name = "cub"
    folder = "CUB_200_2011"

    @staticmethod
    def missing_images(meta: CubMeta, found: set[str]) -> list[tuple[int, str]]:
        """(images.txt line, image name) of every listed image absent from the listing of images/."""
        return [(i, n) for i, n in enumerate(meta.image_names, 1) if n is not None and f"images/{n}" not in found]

    def _roles(self, protocol: str, variant: str, opts: dict[str, Any], meta: CubMeta
               ) -> tuple[list[tuple[int, str]], dict[str, Any]]:
        """(image index, role) pairs and the sidecar notes/seeds for one protocol and variant."""
        p = self.card["protocols"][protocol]
        pairs: list[tuple[int, str]] = []
        notes: dict[str, Any] = {}
        if protocol == "fgir_open":
            rng = {k: range(v[0], v[1] + 1) for k, v in p["class_ranges"].items()}
            for i, cid in enumerate(meta.labels):
                if cid in rng["test"]:
                    pairs += [(i, "query"), (i, "gallery")]
                elif variant == "paper" and cid in rng["paper_train"]:
                    pairs.append((i, "train"))
                elif variant == "clean" and cid in rng["clean_val"]:
                    pairs += [(i, "val_query"), (i, "val_gallery")] + ([(i, "train")] if opts["trainval"] else [])
                elif variant == "clean" and cid in rng["clean_train"]:
                    pairs.append((i, "train"))
            if opts["trainval"]:
                notes["trainval"] = True
            return pairs, {"notes": notes, "seeds": {}, "class_ranges": p["class_ranges"]}
        val: set[int] = set()
        if variant == "clean":
            per_class: dict[int, list[int]] = {}
            for i, (cid, tr) in enumerate(zip(meta.labels, meta.is_train)):
                if tr:
                    per_class.setdefault(cid, []).append(i)  # already in image_id order
            for cid, idx in per_class.items():
                chosen, _ = sample_split(idx, p["val_frac"], seed=cid)
                val.update(chosen)
        for i, tr in enumerate(meta.is_train):
            if not tr:
                pairs += [(i, "query")] + ([(i, "gallery")] if opts["gallery"] == "test" else [])
            elif i in val:
                pairs += [(i, "val_query"), (i, "val_gallery")]
            else:
                pairs += [(i, "train")] + ([(i, "gallery")] if opts["gallery"] == "train" else [])
        if opts["gallery"] == "train":
            notes.update({"gallery": "train", "same_set": False, "gallery_train_overlap": True})
        seeds = {"val_frac": p["val_frac"], "val_seed": "official class_id (1-based)"} if variant == "clean" else {}
        return pairs, {"notes": notes, "seeds": seeds}

    def build_manifest(self, root: str | Path, protocol: str, variant: str = "clean",
                       holdout: str | None = None, **options: Any) -> Manifest:
        info = self.protocol_info(protocol)
        known = {"crop_bbox": False, ALLOW_OPTION: False, **({"trainval": False} if protocol == "fgir_open" else {"gallery": "test"})}
        opts = check_variant_and_options(variant, holdout, options, known)
        if opts.get("gallery") not in (None, "test", "train"):
            raise ConfigError(f"gallery='{opts['gallery']}' is not supported; use 'test' (same-set) or 'train'")
        if opts.get("trainval") and variant == "paper":
            raise ConfigError("trainval=True only applies to the clean variant (paper already trains on 1-100)")
        ds = self.dataset_dir(root)
        meta, _ = parse_metadata(ds, self.card["expected_counts"]["classes"], strict=True)
        listing, skipped = scan_domain(ds, "images")
        found = [f for fs in listing.values() for f in fs]
        missing = self.missing_images(meta, set(found))
        if missing:
            line, name = missing[0]
            raise DataError(f"{ds / 'images.txt'}:{line}: lists images/{name}, which is missing "
                            f"({len(missing)} of {len(meta.image_names)} listed images are missing); "
                            "re-extract CUB_200_2011.tgz or fix images.txt")
        pairs, extra = self._roles(protocol, variant, opts, meta)
        records = []
        for i, role in pairs:
            cls = meta.class_names[meta.labels[i] - 1]
            records.append({"relpath": f"images/{meta.image_names[i]}", "class_name": cls,
                            "class_id": meta.labels[i] - 1, "domain": "photo", "role": role,
                            "box": meta.boxes[i], "image_id": i + 1})
        listed = {f"images/{n}" for n in meta.image_names}
        unlisted = sorted(set(found) - listed)
        notes = dict(extra["notes"])
        if variant == "paper":
            notes.update({"no_val_split": True, "test_selected_upstream": True})
        manifest_meta = {
            "dataset": self.name, "protocol": protocol, "variant": variant, "holdout": None, "options": opts,
            "seeds": extra["seeds"], "listing_sha256": listing_sha256(found),
            "inverted_domains": sorted(self.inverted_domains(variant)), "notes": notes,
            "same_set": notes.get("same_set", info.same_set), "class_names": meta.class_names,
            "synthetic": read_synth_marker(ds) is not None,
            "unlisted_images": len(unlisted), "unlisted_examples": unlisted[:MAX_LISTED],
            "skipped_files": len(skipped), "skipped_examples": skipped[:MAX_LISTED],
        }
        return assemble(records, manifest_meta)

    def verify(self, root: str | Path) -> VerifyReport:
        report = VerifyReport(self.name, str(root))
        try:
            ds = self.dataset_dir(root)
            marker = read_synth_marker(ds)
        except DataError as exc:
            report.problems.append(str(exc))
            return report
        expected = marker["expected_counts"] if marker else self.card["expected_counts"]
        meta, report.problems = parse_metadata(ds, self.card["expected_counts"]["classes"], strict=False)
        official = self.card["class_names"]
        if len(meta.class_names) == len(official) and meta.class_names != official:
            bad = next(i for i, (a, b) in enumerate(zip(meta.class_names, official), 1) if a != b)
            report.problems.append(f"{ds / 'classes.txt'}:{bad}: class {meta.class_names[bad - 1]!r} differs from "
                                   f"the official '{official[bad - 1]}'")
        listing, _ = scan_domain(ds, "images")
        found = {f for fs in listing.values() for f in fs}
        missing = self.missing_images(meta, found)
        report.problems += [f"{ds / 'images.txt'}:{i}: lists images/{n}, which is missing" for i, n in missing[:200]]
        if len(missing) > 200:
            report.problems.append(f"{len(missing) - 200} more listed images are missing")
        listed = {f"images/{n}" for n in meta.image_names if n is not None}
        unlisted = sorted(found - listed)
        if unlisted:
            report.problems.append(f"{ds / 'images'}: {len(unlisted)} image files are not in images.txt: "
                                   f"{', '.join(unlisted[:MAX_LISTED])}")
        labels = [c for c in meta.labels if c is not None]
        counts = {"images": len(meta.image_names), "classes": len(meta.class_names),
                  "train": sum(t is True for t in meta.is_train), "test": sum(t is False for t in meta.is_train),
                  "classes_1_100": sum(c <= 100 for c in labels), "classes_101_200": sum(c > 100 for c in labels)}
        report.counts.update(counts)
        for key, n in counts.items():
            if n != expected[key]:
                report.problems.append(f"{ds}: {n} {key.replace('_', ' ')}, expected exactly {expected[key]}")
        report.problems += image_problems(ds, sorted(listed & found))
        return report

    def synth(self, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
        """Synthetic CUB with the 200 official class names; tiny draws classes from every protocol range."""
        check_scale(scale)
        cfg = self.card["synthetic"][scale]
        if scale == "small":
            class_ids = list(range(1, 201))
        else:
            class_ids = [cid for lo, k in cfg["from_ranges"] for cid in range(lo, lo + k)]
        return write_cub_tree(root, self.folder, self.card["class_names"], class_ids, cfg["per_class"], seed,
                              extra={"dataset": self.name, "scale": scale})
