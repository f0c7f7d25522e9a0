"""RetrievalDataModule: one frozen manifest -> train / val / test loaders with the model's transforms."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError
from ..paths import cache_dir as default_cache_dir
from ..vlm.preprocess import ImagePreprocess
from .base import DatasetAdapter, get_dataset
from .completeness import ALLOW_OPTION, check_complete, missing_notes, warn_incomplete
from .images import SKIP_HINT, load_image
from .info import DataInfo, build_info
from .manifest import GENERATOR_VERSION, ROLES, Manifest, read_manifest, write_manifest
from .samplers import DomainBalancedBatchSampler, SeededBatches, ShuffledBatchSampler
from .transforms import NAN_BOX, EvalTransform, TrainTransform
from .verify_utils import find_bad_images

log = logging.getLogger(__name__)
EVAL_ROLES = ("query", "gallery", "val_query", "val_gallery")


class WorkerDataError(DataError):
    """A DataError that survives a DataLoader worker: torch re-raises it with the worker's traceback
    as its message; the constructor keeps only the original one-line message."""

    def __init__(self, msg: str) -> None:
        marker = f"{type(self).__name__}: "
        if msg.startswith("Caught ") and marker in msg:
            msg = msg.rsplit(marker, 1)[1].strip()
        super().__init__(msg)


class ManifestDataset(Dataset):
    """Rows of one role; items are dicts (see RetrievalDataModule for the keys)."""

    def __init__(self, rows: pd.DataFrame, image_root: Path, transform: EvalTransform | TrainTransform,
                 info: DataInfo, crop_to_box: bool = False, paths: list[Path] | None = None,
                 originals: bool = False) -> None:
        self.image_root = image_root
        self.crop_to_box = crop_to_box
        self.originals = originals  # items also carry the decoded image (see RetrievalDataModule)
        self.transform = transform
        self.relpaths = list(rows["relpath"])  # canonical (layout-independent) forms
        # the files as stored: equal to image_root / relpath except in layouts the adapter maps
        self.paths = list(paths) if paths is not None else [image_root / r for r in self.relpaths]
        self.class_ids = [int(c) for c in rows["class_id"]]
        label_of = {c: i for i, c in enumerate(info.train_class_ids)}
        domain_of = {d: i for i, d in enumerate(info.train_domains)}
        self.labels = [label_of.get(c, -1) for c in self.class_ids]
        self.domain_ids = [domain_of.get(d, -1) for d in rows["domain"]]
        inverted = set(info.inverted_domains)
        self.invert = [d in inverted for d in rows["domain"]]
        self.boxes = list(rows["box"]) if "box" in rows else [None] * len(rows)
        ids = rows["image_id"] if "image_id" in rows else [None] * len(rows)
        self.image_ids = [int(v) if str(v).strip().isdigit() else -1 for v in ids]  # CSV gives str, '' if none
        self.captions = list(rows["captions"]) if info.has_captions else None
        negs = rows["hard_negatives"] if "hard_negatives" in rows else [None] * len(rows)
        self.negatives = [list(n or []) for n in negs]

    def __len__(self) -> int:
        return len(self.relpaths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """`key` is a row index, or (row index, augmentation seed) from a seeded batch sampler."""
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        try:
            img = load_image(self.paths[i], invert=self.invert[i])
        except DataError as exc:
            raise WorkerDataError(str(exc)) from None
        box = self.boxes[i]
        if self.crop_to_box and box is not None:  # e.g. CUB crop_bbox=True: the object fills the input
            img = img.crop(tuple(int(round(v)) for v in box))
            box = (0.0, 0.0, float(img.width), float(img.height))
        gen = None  # per-sample seed: augmentation independent of workers, identical after a resume
        if aug_seed is not None and not isinstance(self.transform, EvalTransform):
            gen = torch.Generator().manual_seed(aug_seed)
        pixels, out_box, window = self.transform.with_window(img, box, generator=gen)
        item = {"pixels": pixels, "class_id": self.class_ids[i], "label": self.labels[i],
                "domain_id": self.domain_ids[i], "index": i, "box": out_box}
        if self.originals:
            item.update(image=img, window=window, image_id=self.image_ids[i],
                        image_box=torch.tensor(box if box is not None else NAN_BOX, dtype=torch.float32))
        if self.captions is not None:
            caps = self.captions[i] or [""]
            item["caption"] = caps[0]
            item["negatives"] = self.negatives[i]
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, make LongTensors of ids, keep text fields as lists."""
    out: dict[str, Any] = {
        "pixels": torch.stack([it["pixels"] for it in items]),
        "box": torch.stack([it["box"] for it in items]),
    }
    for key in ("class_id", "label", "domain_id", "index"):
        out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    if "caption" in items[0]:
        out["caption"] = [it["caption"] for it in items]
        out["negatives"] = [it["negatives"] for it in items]
    if "image" in items[0]:
        out["image"] = [it["image"] for it in items]  # PIL images of differing sizes
        out["window"] = torch.stack([it["window"] for it in items])
        out["image_box"] = torch.stack([it["image_box"] for it in items])
        out["image_id"] = torch.tensor([it["image_id"] for it in items], dtype=torch.long)
    return out


class RetrievalDataModule(L.LightningDataModule):
    """Generic DataModule over any registered dataset adapter.

    Batches are dicts: `pixels` (B,3,S,S), `class_id` (global), `label` (index into
    `info.train_class_ids`, -1 otherwise), `domain_id` (index into `info.train_domains`, -1 otherwise),
    `index` (row position within its role), `box` (B,4 normalised xyxy of the output, NaN if none),
    plus `caption` / `negatives` for caption manifests. With `original_images`, training batches also
    carry `image` (the decoded PIL images), `window` (B,5: the tensor's crop in image pixels as left, top,
    width, height, flipped), `image_box` (B,4 pixel xyxy of the image, NaN if none) and `image_id`
    (the manifest's, -1 if none), for methods that build views from the full-resolution image.
    """

    def __init__(self, dataset: str, root: str | Path, protocol: str | None = None, variant: str = "clean",
                 holdout: str | None = None, *, preprocess: ImagePreprocess, batch_size: int = 32,
                 eval_batch_size: int = 64, num_workers: int = 0, seed: int = 0, augment: bool = True,
                 domain_balanced: bool = True, skip_bad_images: bool = False,
                 manifest_path: str | Path | None = None, cache_dir: str | Path | None = None,
                 max_train_samples: int | None = None, allow_listing_mismatch: bool = False,
                 original_images: bool = False, **protocol_options: Any) -> None:
        super().__init__()
        if variant not in ("clean", "paper"):
            raise ConfigError(f"unknown variant '{variant}'; known variants: clean, paper")
        self.dataset_name = dataset
        self.root = Path(root)
        self.protocol = protocol
        self.variant = variant
        self.holdout = holdout
        self.preprocess = preprocess
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.augment, self.domain_balanced = augment, domain_balanced
        self.skip_bad_images = skip_bad_images
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_train_samples = max_train_samples
        self.allow_listing_mismatch = allow_listing_mismatch
        self.original_images = original_images
        self.protocol_options = protocol_options
        self.skipped_images = 0
        self.info: DataInfo | None = None
        self.manifest: Manifest | None = None
        self._roles: dict[str, pd.DataFrame] = {}

    # --- set-up ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.info is not None:
            return
        adapter: DatasetAdapter = get_dataset(self.dataset_name)
        self.adapter = adapter
        protocol = self.protocol or adapter.default_protocol()
        adapter.protocol_info(protocol)  # unknown protocol -> ConfigError listing the known ones
        holdout = self.holdout if self.holdout is not None else adapter.default_holdout(protocol)
        self.protocol, self.holdout = protocol, holdout
        allow_missing = bool(self.protocol_options.get(ALLOW_OPTION, False))
        missing = check_complete(adapter, self.root, protocol, holdout, allow_missing)
        warn_incomplete(adapter.name, self.root, missing)
        manifest, notes = load_or_build_manifest(
            adapter, self.root, protocol, self.variant, holdout, self.protocol_options,
            manifest_path=self.manifest_path, cache_dir=self.cache_dir,
            allow_listing_mismatch=self.allow_listing_mismatch)
        notes.update(missing_notes(missing))
        self.image_root = adapter.image_root(self.root)
        unique = sorted(set(manifest.rows["relpath"]))
        self._path_of = dict(zip(unique, adapter.file_paths(self.root, unique)))
        rows = manifest.rows
        if self.skip_bad_images:
            rows, notes["skipped_images"] = self._drop_bad_images(rows)
            self.skipped_images = len(notes["skipped_images"])
        if self.max_train_samples is not None:
            rows = _limit_train(rows, self.max_train_samples)
            notes["max_train_samples"] = self.max_train_samples
        self.manifest = Manifest(rows.reset_index(drop=True), manifest.meta)
        self.info = build_info(adapter, self.manifest, protocol, self.variant, holdout, notes)
        self._roles = {r: self.manifest.role(r) for r in ROLES}
        self._train_tf, self._eval_tf = TrainTransform(self.preprocess), EvalTransform(self.preprocess)

    def _drop_bad_images(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        unique = sorted(set(rows["relpath"]))
        rel_of = {self._path_of[r]: r for r in unique}
        bad = find_bad_images(self._path_of[r] for r in unique)
        bad_rel = {rel_of[p] for p, _ in bad}
        for path, reason in bad:
            log.warning("skipping bad image %s (skip_bad_images=true): %s", path, reason.replace(f"; {SKIP_HINT}", ""))
        return rows[~rows["relpath"].isin(bad_rel)], sorted(bad_rel)

    def _require_setup(self) -> DataInfo:
        if self.info is None:
            self.setup()
        assert self.info is not None
        return self.info

    # --- access -----------------------------------------------------------------------------------
    def role_frame(self, role: str) -> pd.DataFrame:
        """The manifest rows of one role, in manifest order (positions = batch `index`)."""
        self._require_setup()
        if role not in self._roles:
            raise ConfigError(f"unknown role '{role}'; known roles: {', '.join(ROLES)}")
        return self._roles[role]

    def texts(self, role: str) -> list[str]:
        """First caption of every row of `role` (image-text protocols)."""
        info = self._require_setup()
        if not info.has_captions:
            raise ConfigError(f"{info.dataset}/{info.protocol} has no captions; texts() needs a caption dataset")
        return [(c or [""])[0] for c in self.role_frame(role)["captions"]]

    def caption_lists(self, role: str) -> list[list[str]]:
        """All captions of every row of `role`."""
        self.texts(role)  # same checks
        return [list(c or []) for c in self.role_frame(role)["captions"]]

    def dataset_for(self, role: str, train_transform: bool = False) -> ManifestDataset:
        info = self._require_setup()
        tf = self._train_tf if train_transform else self._eval_tf
        crop = bool((self.manifest.meta.get("options") or {}).get("crop_bbox", False))
        frame = self.role_frame(role)
        return ManifestDataset(frame, self.image_root, tf, info, crop_to_box=crop,
                               paths=[self._path_of[r] for r in frame["relpath"]],
                               originals=self.original_images and role == "train")

    # --- loaders ----------------------------------------------------------------------------------
    def _loader_kwargs(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "collate_fn": collate,
                "persistent_workers": self.num_workers > 0, "pin_memory": torch.cuda.is_available()}

    def train_dataloader(self) -> DataLoader:
        info = self._require_setup()
        ds = self.dataset_for("train", train_transform=self.augment)
        if len(ds) == 0:
            raise ConfigError(f"{info.dataset}/{info.protocol}/{info.variant} has no train rows")
        if self.domain_balanced and len(info.train_domains) > 1:
            sampler = DomainBalancedBatchSampler(ds.domain_ids, self.batch_size, seed=self.seed)
        else:
            sampler = ShuffledBatchSampler(len(ds), self.batch_size, seed=self.seed)
        return DataLoader(ds, batch_sampler=SeededBatches(sampler, self.seed), **self._loader_kwargs())

    def eval_dataloader(self, role: str) -> DataLoader:
        """Un-augmented loader over one evaluation role, in manifest order."""
        if role not in EVAL_ROLES:
            raise ConfigError(f"unknown evaluation role '{role}'; known: {', '.join(EVAL_ROLES)}")
        return DataLoader(self.dataset_for(role), batch_size=self.eval_batch_size, shuffle=False,
                          **self._loader_kwargs())

    def val_dataloader(self) -> list[DataLoader]:
        """[val_query, val_gallery] when the protocol has a validation split, else []."""
        self._require_setup()
        if len(self._roles["val_query"]) and len(self._roles["val_gallery"]):
            return [self.eval_dataloader("val_query"), self.eval_dataloader("val_gallery")]
        return []

    def test_dataloader(self) -> list[DataLoader]:
        """[query, gallery] (test)."""
        return [self.eval_dataloader("query"), self.eval_dataloader("gallery")]


def _limit_train(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Keep a fixed seeded subset of `limit` train rows (same subset for every run seed), in manifest order."""
    if limit < 1:
        raise ConfigError(f"max_train_samples must be >= 1, got {limit}")
    train_pos = [i for i, r in enumerate(rows["role"]) if r == "train"]
    if len(train_pos) <= limit:
        return rows
    keep = set(np.asarray(train_pos)[np.sort(np.random.RandomState(0).permutation(len(train_pos))[:limit])])
    mask = [(r != "train") or (i in keep) for i, r in enumerate(rows["role"])]
    return rows[mask]



# --- manifest cache and verification (PROTOCOLS §1.2) -----------------------------------------------
def manifest_cache_path(cache_dir: Path, adapter: DatasetAdapter, root: Path, protocol: str, variant: str,
                        holdout: str | None, options: dict[str, Any]) -> Path:
    """Cache file keyed by dataset/protocol/variant/holdout/options (in their identity form, e.g. annotation
    files by content) and the root's absolute path."""
    key = {"dataset": adapter.name, "protocol": protocol, "variant": variant, "holdout": holdout,
           "options": adapter.identity_options(root, options), "root": str(Path(root).resolve()),
           "generator": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
    return cache_dir / f"{adapter.name}-{protocol}-{variant}-{holdout or 'none'}-{digest}.csv"


def tree_listing_sha256(adapter: DatasetAdapter, root: Path, protocol: str, variant: str,
                        holdout: str | None, options: dict[str, Any]) -> str:
    """listing_sha256 of the local tree: the adapter's fast `listing_sha256(root)` if it has one,
    otherwise the value recorded by a fresh build."""
    hook = getattr(adapter, "listing_sha256", None)
    if callable(hook):
        return str(hook(root))
    return str(adapter.build_manifest(root, protocol, variant, holdout, **options).meta["listing_sha256"])


def load_or_build_manifest(adapter: DatasetAdapter, root: Path, protocol: str, variant: str,
                           holdout: str | None, options: dict[str, Any], *, manifest_path: Path | None,
                           cache_dir: Path | None, allow_listing_mismatch: bool) -> tuple[Manifest, dict]:
    """Read a supplied or cached manifest (verified against the tree), or build and cache one."""
    notes: dict[str, Any] = {}
    supplied = manifest_path is not None
    if supplied:
        path = manifest_path
    else:
        cdir = cache_dir or (default_cache_dir() / "manifests")
        path = manifest_cache_path(cdir, adapter, root, protocol, variant, holdout, options)
    if supplied or path.is_file():
        manifest = read_manifest(path)
        _check_identity(manifest, path, adapter.name, protocol, variant, holdout,
                        adapter.identity_options(root, options))
        manifest = _verify_listing(manifest, path, adapter, root, protocol, variant, holdout, options,
                                   supplied, allow_listing_mismatch, notes)
    else:
        manifest = adapter.build_manifest(root, protocol, variant, holdout, **options)
        write_manifest(manifest, path)
    notes["manifest_path"] = str(path)
    notes["listing_sha256"] = manifest.meta.get("listing_sha256")
    return manifest, notes


def _check_identity(manifest: Manifest, path: Path, dataset: str, protocol: str, variant: str,
                    holdout: str | None, options: dict[str, Any]) -> None:
    meta = manifest.meta
    if not meta:
        raise DataError(f"manifest {path} has no sidecar {path.stem}.meta.json; it cannot be verified, "
                        "copy the sidecar along with the CSV or rebuild it with `xbench data manifest`")
    wanted = {"dataset": dataset, "protocol": protocol, "variant": variant, "holdout": holdout}
    wanted.update({f"options.{k}": v for k, v in options.items()})
    for key, want in wanted.items():
        section, _, sub = key.partition(".")
        have_map = meta.get(section, {}) if sub else meta
        name = sub or section
        if isinstance(have_map, dict) and name in have_map and have_map[name] != want:
            raise ConfigError(f"manifest {path} was made for {key}={have_map[name]!r}, not {want!r}; "
                              "pass the matching arguments or another manifest")


def _verify_listing(manifest: Manifest, path: Path, adapter: DatasetAdapter, root: Path, protocol: str,
                    variant: str, holdout: str | None, options: dict[str, Any], supplied: bool,
                    allow: bool, notes: dict[str, Any]) -> Manifest:
    stored = manifest.meta.get("listing_sha256")
    local = tree_listing_sha256(adapter, root, protocol, variant, holdout, options)
    if stored == local:
        return manifest
    if not allow:
        fix = ("use the tree the manifest was made from" if supplied
               else f"delete {path} to rebuild it from the current tree")
        raise DataError(f"the dataset tree under {root} differs from the one manifest {path} was made from "
                        f"(listing_sha256 {local[:12]}… vs {str(stored)[:12]}…); {fix}, "
                        "or pass allow_listing_mismatch=True to drop missing files (row marked nonstandard)")
    exists = [p.is_file() for p in adapter.file_paths(root, list(manifest.rows["relpath"]))]
    rows = manifest.rows[exists].reset_index(drop=True)
    dropped = len(manifest.rows) - len(rows)
    log.warning("listing mismatch for %s: dropped %d manifest rows whose files are missing", path, dropped)
    notes.update(nonstandard=True, listing_mismatch={"stored": stored, "local": local, "dropped_rows": dropped})
    return Manifest(rows, manifest.meta)
