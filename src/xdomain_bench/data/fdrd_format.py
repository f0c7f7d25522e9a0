"""FDRD caption files (PROTOCOLS.md §6): released JSON, path rules, class inference, canonical JSONL.

The released files are one JSON object keyed by image id (§6.2); images live in the CoOp layout under
the data root (§6.4). Canonical JSONL (§6.5) is our own frozen form, read and written here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io_utils import atomic_write_text
from .listing import IMAGE_EXTENSIONS, utf8_name


@dataclass(frozen=True)
class CoopDataset:
    """One CoOp dataset that FDRD captions refer to."""

    folder: str  # CoOp folder under the data root; also the canonical `dataset` value
    tag: str  # tag in the released file names: <tag>_<split>.json or inter_<tag>_<split>.json
    image_dir: str  # folder (under `folder`) that CoOp split-file image paths are relative to
    split_file: str  # CoOp file holding the val split, relative to `folder`


COOP = {d.folder: d for d in (
    CoopDataset("oxford_flowers", "flower", "jpg", "split_zhou_OxfordFlowers.json"),
    CoopDataset("oxford_pets", "pets", "images", "split_zhou_OxfordPets.json"),
    CoopDataset("fgvc_aircraft", "plane", "images", "images_variant_val.txt"),
    CoopDataset("stanford_cars", "car", ".", "split_zhou_StanfordCars.json"),
    CoopDataset("caltech-101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    CoopDataset("dtd", "dtd", "images", "split_zhou_DescribableTextures.json"),
    CoopDataset("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
)}
BY_TAG = {d.tag: d.folder for d in COOP.values()}
RELEASED_NAME = re.compile(r"^(?:inter_)?(flower|pets|plane|car|caltech-101|dtd|ucf101)_(train|test)\.json$")
ALIASES = {"flowers": "oxford_flowers", "flower": "oxford_flowers", "pets": "oxford_pets",
           "aircraft": "fgvc_aircraft", "plane": "fgvc_aircraft", "cars": "stanford_cars",
           "car": "stanford_cars", "caltech": "caltech-101", "caltech101": "caltech-101", "ucf": "ucf101"}
# FGVC variant names whose "/" was written as "_" in the aircraft keys (§6.2) [ours].
AIRCRAFT_SLASH = {"F-16A_B": "F-16A/B", "F_A-18": "F/A-18"}
SPLITS = ("train", "val", "test")
CANONICAL_FIELDS = ("image_id", "dataset", "split", "image_path", "category", "category_id", "captions",
                    "attributes", "hard_negatives", "source")


@dataclass
class RawEntry:
    """One released entry before path resolution. `where` names its file and key for messages."""

    key: str
    file_name: str
    positive: str
    negative: list[str]
    class_name: str | None = None
    number: str | None = None
    where: str = ""


@dataclass
class Entry:
    """One image with its caption(s): the canonical record of §6.5."""

    image_id: str
    dataset: str
    split: str
    image_path: str
    category: str
    category_id: int
    captions: list[str]
    hard_negatives: list[str]
    attributes: list[str] = field(default_factory=list)
    source: str = "fdrd"
    where: str = ""

    def to_json(self) -> str:
        obj = {k: getattr(self, k) for k in CANONICAL_FIELDS}
        return json.dumps(obj, ensure_ascii=False)


def normalise_text(text: str) -> str:
    """Caption comparison key: `" ".join(s.split())` (PROTOCOLS §6.5, §7.2)."""
    return " ".join(text.split())


def clean_negatives(negatives: Iterable[str], captions: Iterable[str]) -> list[str]:
    """`clean` hard negatives: drop those equal to a caption, dedupe in first-occurrence order."""
    seen = {normalise_text(c) for c in captions}
    out: list[str] = []
    for neg in negatives:
        key = normalise_text(neg)
        if key not in seen:
            seen.add(key)
            out.append(neg)
    return out


def resolve_dataset_name(name: str) -> str:
    """CoOp folder name for a folder name, file tag or alias (e.g. `pets`, `plane`)."""
    key = name.strip()
    folder = key if key in COOP else BY_TAG.get(key) or ALIASES.get(key.lower())
    if folder is None:
        raise DataError(f"unknown FDRD dataset '{name}'; known: {', '.join(sorted(COOP))} (or aliases "
                        f"{', '.join(sorted(ALIASES))})")
    return folder


# --- released JSON ------------------------------------------------------------------------------------
def load_json(path: Path) -> Any:
    """Parse a JSON file; malformed input -> DataError naming the file, line and column."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise DataError(f"{path}: duplicate key {k!r}; every image id must occur once, "
                                "remove one copy")
            out[k] = v
        return out

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); re-download the file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check the file") from None
    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); "
                        "re-download the file or fix it at that position") from None


def parse_released(path: Path, errors: list[str] | None = None) -> list[RawEntry]:
    """Entries of one released file, sorted by key. Bad entries raise DataError naming file and key,
    or, when `errors` is given, are appended there and skipped (for `verify`)."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected one JSON object keyed by image id, found {type(data).__name__}; "
                        "is this a released FDRD caption file?")
    out: list[RawEntry] = []
    for key in sorted(data):
        try:
            out.append(_entry(path, key, data[key]))
        except DataError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return out


def _entry(path: Path, key: str, rec: Any) -> RawEntry:
    where = f"{path}: key {key!r}"

    def bad(what: str) -> DataError:
        return DataError(f"{where}: {what}; fix the entry or re-download the file")

    if not isinstance(rec, dict):
        raise bad(f"value is {type(rec).__name__}, expected an object")
    file_name, positive = rec.get("file_name"), rec.get("positive")
    if not isinstance(file_name, str) or not file_name.strip():
        raise bad("'file_name' missing or not a non-empty string")
    if not isinstance(positive, str) or not positive.strip():
        raise bad("'positive' missing or not a non-empty string")
    negative = rec.get("negative", [])
    if not isinstance(negative, list) or not all(isinstance(n, str) for n in negative):
        raise bad("'negative' must be a list of strings")
    class_name = rec.get("class_name")
    if class_name is not None and (not isinstance(class_name, str) or not class_name.strip()):
        raise bad("'class_name' must be a non-empty string")
    number = rec.get("number")
    if isinstance(number, int) and not isinstance(number, bool):
        number = f"{number:05d}"
    if number is not None and (not isinstance(number, str) or not number.isdigit()):
        raise bad(f"'number' must be a digit string, got {number!r}")
    return RawEntry(key, file_name, positive, list(negative), class_name, number, where)


def infer_category(dataset: str, entry: RawEntry, restore: dict[str, str] | None = None) -> str | None:
    """`class_name`, else the class from the key (pets, aircraft; §6.2); None when there is no rule."""
    if entry.class_name is not None:
        return entry.class_name
    if dataset not in ("oxford_pets", "fgvc_aircraft") or "_" not in entry.key:
        return None
    prefix = entry.key.rsplit("_", 1)[0]
    if dataset == "fgvc_aircraft":
        prefix = (restore or {}).get(prefix) or AIRCRAFT_SLASH.get(prefix, prefix)
    return prefix


def _with_jpg(name: str) -> str:
    return name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else f"{name}.jpg"


def rule_path(dataset: str, entry: RawEntry) -> str | None:
    """The §6.4 path (relative to the data root) for an entry, or None when no rule applies."""
    name = entry.file_name
    if dataset in ("oxford_pets", "fgvc_aircraft"):
        return f"{dataset}/images/{_with_jpg(name)}"
    if dataset == "oxford_flowers":
        number = entry.number
        if number is None:
            m = re.search(r"image_(\d+)(?:\.jpe?g)?$", name)
            number = m.group(1) if m else None
        return f"oxford_flowers/jpg/image_{number}.jpg" if number else None
    if dataset == "stanford_cars":
        m = re.fullmatch(r"cars_(train|test)_(\d+)\.jpg", name)
        return f"stanford_cars/cars_{m.group(1)}/{m.group(2)}.jpg" if m else None
    if dataset == "caltech-101":
        if "_image_" not in name:
            return None
        folder, rest = name.rsplit("_image_", 1)
        return f"caltech-101/101_ObjectCategories/{folder}/image_{rest}"
    if dataset in ("dtd", "ucf101"):
        if entry.class_name is None:
            return None
        base = "dtd/images" if dataset == "dtd" else "ucf101/UCF-101-midframes"
        return f"{base}/{entry.class_name}/{name}"
    return None


# --- image index -------------------------------------------------------------------------------------
class ImageIndex:
    """All image files under the CoOp folders of the data root: existence checks and the unique-basename
    fallback of §6.4. Walks each folder once, in sorted order, skipping hidden names."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self._files: dict[str, list[str]] = {}
        self._sets: dict[str, set[str]] = {}
        self._by_name: dict[str, dict[str, list[str]]] = {}

    def files(self, dataset: str) -> list[str]:
        """Sorted relpaths (from the data root) of the images under `<data_root>/<dataset>`."""
        if dataset not in self._files:
            files = walk_images(self.data_root, dataset)
            by_name: dict[str, list[str]] = {}
            for rel in files:
                by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
            self._files[dataset], self._sets[dataset], self._by_name[dataset] = files, set(files), by_name
        return self._files[dataset]

    def exists(self, dataset: str, relpath: str) -> bool:
        self.files(dataset)
        return relpath in self._sets[dataset]

    def by_basename(self, dataset: str, name: str) -> list[str]:
        self.files(dataset)
        return self._by_name[dataset].get(name, [])


def walk_images(data_root: Path, dataset: str) -> list[str]:
    """Sorted relpaths (from the data root) of every image file under `<data_root>/<dataset>`."""
    top = data_root / dataset
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            utf8_name(dirpath, name)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(data_root).as_posix()
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                out.append(f"{rel_dir}/{name}")
    return sorted(out)


def resolve_image(dataset: str, entry: RawEntry, index: ImageIndex) -> str:
    """The image relpath for an entry: the §6.4 rule, else a unique basename hit; DataError otherwise."""
    rule = rule_path(dataset, entry)
    if rule is not None and index.exists(dataset, rule):
        return rule
    name = rule.rsplit("/", 1)[-1] if rule else _with_jpg(entry.file_name)
    hits = index.by_basename(dataset, name)
    if len(hits) == 1:
        return hits[0]
    tried = f"{rule} not found" if rule else "no path rule applies"
    found = f"{len(hits)} files named {name!r}" if hits else f"no file named {name!r}"
    raise DataError(f"{entry.where}: image not found ({tried}; {found} under "
                    f"{index.data_root / dataset}); put the CoOp images there or drop the dataset "
                    "with datasets=...")


# --- CoOp split files --------------------------------------------------------------------------------
def coop_val_paths(data_root: Path, ds: str) -> set[str] | None:
    """Relpaths of CoOp's val split for `ds`, or None when its split file is absent."""
    spec = COOP[ds]
    path = data_root / ds / spec.split_file
    if not path.is_file():
        return None
    if path.suffix == ".txt":  # fgvc_aircraft/images_variant_val.txt: "<id> <variant>" per line
        out = set()
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            image_id = line.split(" ", 1)[0]
            if not line.strip():
                continue
            if not image_id.isdigit() or " " not in line:
                raise DataError(f"{path}:{no}: malformed line {line!r}; expected '<image id> <variant>'")
            out.add(f"{ds}/images/{image_id}.jpg")
        return out
    return {rel for rel, _ in coop_split_items(data_root, ds, ("val",))}


def coop_split_items(data_root: Path, ds: str, splits: tuple[str, ...]) -> list[tuple[str, str]]:
    """(relpath, classname) pairs of a CoOp `split_zhou_*.json` file for the given splits."""
    spec = COOP[ds]
    path = data_root / ds / spec.split_file
    data = load_json(path)
    base = ds if spec.image_dir == "." else f"{ds}/{spec.image_dir}"
    out = []
    for split in splits:
        items = data.get(split) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise DataError(f"{path}: no '{split}' list; expected CoOp's split format "
                            '{"train": [[impath, label, classname], ...], "val": [...], "test": [...]}')
        for i, item in enumerate(items):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                    and isinstance(item[2], str)):
                raise DataError(f"{path}: '{split}'[{i}] is {item!r}; expected [impath, label, classname]")
            out.append((f"{base}/{item[0]}", item[2]))
    return out


def coop_split_classes(data_root: Path, ds: str) -> dict[str, str]:
    """relpath -> CoOp class name from the dataset's split_zhou file ({} when absent or not JSON)."""
    path = data_root / ds / COOP[ds].split_file
    if path.suffix != ".json" or not path.is_file():
        return {}
    return dict(coop_split_items(data_root, ds, ("train", "val", "test")))


def aircraft_restore(data_root: Path) -> dict[str, str]:
    """`F-16A_B` -> `F-16A/B` for every FGVC variant with a '/', from variants.txt when present."""
    path = data_root / "fgvc_aircraft" / "variants.txt"
    if not path.is_file():
        return {}
    names = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if "/" in s]
    return {n.replace("/", "_"): n for n in names}


# --- canonical JSONL ---------------------------------------------------------------------------------
def read_canonical(path: Path) -> list[Entry]:
    """Entries of a canonical JSONL file; malformed lines raise DataError naming file:line and field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as UTF-8 text ({exc}); check the file") from None
    out: list[Entry] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}:{exc.colno}: malformed JSON ({exc.msg}); one object per line") from None
        out.append(_canonical_entry(obj, where))
    return out


def _canonical_entry(obj: Any, where: str) -> Entry:
    def bad(what: str) -> DataError:
        return DataError(f"{where}: {what}; see PROTOCOLS.md §6.5 for the schema")

    if not isinstance(obj, dict):
        raise bad("expected a JSON object")
    for key, typ in (("image_id", str), ("dataset", str), ("split", str), ("image_path", str),
                     ("category", str), ("captions", list)):
        if not isinstance(obj.get(key), typ) or not obj[key]:
            raise bad(f"field '{key}' missing or not a non-empty {typ.__name__}")
    cid = obj.get("category_id")
    if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
        raise bad("field 'category_id' missing or not a non-negative integer")
    if obj["split"] not in SPLITS:
        raise bad(f"split {obj['split']!r} is not one of {', '.join(SPLITS)}")
    if obj["dataset"] not in COOP:
        raise bad(f"dataset {obj['dataset']!r} is not one of {', '.join(sorted(COOP))}")
    lists = {k: obj.get(k, []) for k in ("captions", "attributes", "hard_negatives")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise bad(f"field '{key}' must be a list of strings")
    path = obj["image_path"]
    if path.startswith("/") or ".." in path.split("/") or path.split("/")[0] != obj["dataset"]:
        raise bad(f"image_path {path!r} must be relative to the data root and start with the dataset folder")
    return Entry(obj["image_id"], obj["dataset"], obj["split"], path, obj["category"], cid, lists["captions"],
                 lists["hard_negatives"], lists["attributes"], str(obj.get("source", "fdrd")), where)


def canonical_text(entries: Iterable[Entry]) -> str:
    """JSONL text: lines sorted by (dataset, split, image_id) in code-point order."""
    order = {s: i for i, s in enumerate(SPLITS)}
    rows = sorted(entries, key=lambda e: (e.dataset, order[e.split], e.image_id))
    return "".join(e.to_json() + "\n" for e in rows)


def write_entries(entries: list[Entry], path: str | Path) -> list[Path]:
    """Write canonical JSONL atomically. A `.jsonl` path gets every entry; any other path is a folder
    that gets one file per (dataset, split), named `<dataset>.<split>.jsonl` (§6.5)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        atomic_write_text(path, canonical_text(entries))
        return [path]
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.dataset, e.split), []).append(e)
    written = []
    for (dataset, split), group in sorted(groups.items()):
        target = path / f"{dataset}.{split}.jsonl"
        atomic_write_text(target, canonical_text(group))
        written.append(target)
    return written
