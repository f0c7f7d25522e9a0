"""H14 feature cache: frozen image features computed once per (dataset tree, backbone, transform, view).

A store file holds the features of individual images, keyed by `relpath|invert|box` and checked against
each file's size and mtime, so every role, protocol, hold-out and seed of one tree shares it and a
re-written tree is never served stale features. Store identity = (dataset, listing sha256, image root,
backbone weights sha256, transform description, view index, feature kind, precision).

Runner hook: the runner wraps the cell's DataModule in `CachedFeatureData` (a LightningDataModule) for every
method with `cacheable = True`, so Lightning builds the train loader when it would build the DataModule's (after
DDP has started, so the batch sampler knows its rank) and validation and test read cached features too:

    data = CachedFeatureData(method, datamodule)   # features computed or read back once, here
    trainer.fit(method, datamodule=data)
    loaders = data.eval_dataloader("query")

`build_cached_loaders(method, datamodule, cache_dir)` gives the same loaders without Lightning.

Batches from these loaders carry `features` (frozen image features) instead of `pixels`; every other key
(`class_id`, `label`, `domain_id`, `index`, `box`, `caption`, `negatives`) is as from the DataModule, and
the train loader reuses the DataModule's own batch sampler, so it yields the very same batches.
Train-time augmentation follows the method card's `cache_augmentation`: `none` (eval transform, exact)
or `{views: N}` (N seeded augmented views per image, cached; one drawn per sample per access, by the
sampler's per-sample augmentation seed when it provides one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.datamodule import EVAL_ROLES, ManifestDataset, collate
from ..errors import ConfigError
from ..io_utils import atomic_write
from ..paths import cache_dir as default_cache_dir

log = logging.getLogger(__name__)
FEATURE_KINDS = ("post_proj", "pre_proj")
STORE_VERSION = 1


@dataclass(frozen=True)
class StoreSpec:
    """Identity of one feature store file."""

    dataset: str
    listing_sha256: str
    image_root: str
    backbone_sha256: str
    transform: str
    view: int  # -1 = deterministic eval transform
    kind: str
    precision: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode("utf-8")).hexdigest()

    def path(self, cache_dir: Path) -> Path:
        tag = "eval" if self.view < 0 else f"view{self.view}"
        return Path(cache_dir) / f"{self.dataset}-{self.kind}-{tag}-{self.digest()[:20]}.pt"


def image_key(relpath: str, invert: bool, box: Any) -> str:
    box_s = json.dumps([float(v) for v in box]) if box is not None and len(box) == 4 else "-"
    return f"{relpath}|{int(bool(invert))}|{box_s}"


def file_signature(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def parse_augmentation(policy: Any) -> int:
    """Card `cache_augmentation` -> number of cached augmented views (0 = eval transform only)."""
    if policy is None or policy == "none" or policy is False or policy == 0:
        return 0
    if isinstance(policy, dict) and set(policy) == {"views"}:
        policy = policy["views"]
    elif isinstance(policy, str) and policy.replace(" ", "").startswith("views:"):
        policy = policy.split(":", 1)[1]
    try:
        views = int(policy)
    except (TypeError, ValueError):
        views = -1
    if views < 1:
        raise ConfigError(f"cache_augmentation must be 'none' or {{views: N}} with N >= 1, got {policy!r}")
    return views


class _AugmentedView(Dataset):
    """Rows of a train-transform ManifestDataset, each augmented with a seed fixed by (image, view)."""

    def __init__(self, base: ManifestDataset, view: int) -> None:
        self.base, self.view = base, view

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.base
        key = image_key(b.relpaths[i], b.invert[i], b.boxes[i])
        seed = int.from_bytes(hashlib.sha256(f"{key}#{self.view}".encode()).digest()[:7], "big")
        return b[(i, seed)]  # the DataModule's own seeded-augmentation path


class FeatureCache:
    """Computes and stores frozen image features of DataModule roles (H14)."""

    def __init__(self, vlm: Any, cache_dir: str | Path | None = None, *, kind: str = "post_proj",
                 device: str | torch.device | None = None, precision: str | None = None,
                 batch_size: int = 64, num_workers: int = 0) -> None:
        if kind not in FEATURE_KINDS:
            raise ConfigError(f"feature kind must be one of {FEATURE_KINDS}, not '{kind}'")
        self.vlm = vlm
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "features"
        self.kind = kind
        self.device = torch.device(device) if device is not None else next(vlm.parameters()).device
        self.precision = str(precision or "32-true")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.stats = {"computed": 0, "reused": 0}
        self.compute_s = 0.0  # seconds spent running the encoder
        self.stores: dict[str, str] = {}  # store file per transform tag ("eval", "view0", ...)
        self._loaded: dict[Path, dict[str, Any]] = {}  # stores read by this instance: each file read once

    def _autocast(self):
        if self.precision.startswith("bf16") and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.precision.startswith("16") and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def spec(self, datamodule: Any, transform: str, view: int) -> StoreSpec:
        info = datamodule.info
        listing = (datamodule.manifest.meta.get("listing_sha256") if datamodule.manifest is not None else None) \
            or info.notes.get("listing_sha256") or "unknown"
        backbone = self.vlm.spec.get("weights_sha256") or json.dumps(self.vlm.spec, sort_keys=True, default=str)
        return StoreSpec(info.dataset, str(listing), str(Path(datamodule.image_root).resolve()), str(backbone),
                         transform, view, self.kind, self.precision)

    def role_features(self, datamodule: Any, role: str, view: int = -1, rows: Sequence[int] | None = None
                      ) -> tuple[Tensor, Tensor]:
        """(features (N, D) float32, boxes (N, 4)) for every row of `role`, in manifest order.

        `view = -1` uses the DataModule's deterministic eval transform (exact); `view >= 0` the train
        transform with a generator seeded by (image, view). `rows` limits the work to those row positions
        (e.g. the batches of a capped run); the other rows come back as NaN, so reading one cannot go unseen."""
        base = datamodule.dataset_for(role)
        crop = f"crop_to_box={bool(getattr(base, 'crop_to_box', False))}"
        if view < 0:
            source: Dataset = base
            transform = f"eval:{json.dumps(datamodule.preprocess.to_dict(), sort_keys=True)}:{crop}"
        else:
            train_ds = datamodule.dataset_for(role, train_transform=True)
            source = _AugmentedView(train_ds, view)
            tf = train_ds.transform
            transform = (f"train:{json.dumps(datamodule.preprocess.to_dict(), sort_keys=True)}:{crop}:"
                         f"{type(tf).__name__}:{json.dumps(vars_of(tf), sort_keys=True, default=str)}")
        spec = self.spec(datamodule, transform, view)
        path = spec.path(self.cache_dir)
        keys = [image_key(r, inv, b) for r, inv, b in zip(base.relpaths, base.invert, base.boxes)]
        sigs = [file_signature(path) for path in base.paths]  # the files as stored (layouts may differ)
        self.stores["eval" if view < 0 else f"view{view}"] = str(path)
        if path not in self._loaded:
            self._loaded[path] = load_store(path, spec)
        store = self._loaded[path]
        wanted = range(len(keys)) if rows is None else sorted({int(i) for i in rows})
        first: dict[str, int] = {}
        for i in wanted:
            first.setdefault(keys[i], i)
        missing = [i for k, i in first.items() if store["index"].get(k) is None
                   or store["sigs"][store["index"][k]] != sigs[i]]
        if missing:
            t0 = time.perf_counter()
            feats, boxes = self._compute(Subset(source, missing))
            self.compute_s += time.perf_counter() - t0
            update_store(store, [keys[i] for i in missing], [sigs[i] for i in missing], feats, boxes)
            save_store(path, spec, store)
        self.stats["computed"] += len(missing)
        self.stats["reused"] += len(first) - len(missing)
        dim = self._dim()
        if not len(keys):
            return torch.zeros(0, dim), torch.zeros(0, 4)
        if rows is None:
            at = torch.as_tensor([store["index"][k] for k in keys], dtype=torch.long)
            return store["features"][at], store["boxes"][at]
        feats, boxes = torch.full((len(keys), dim), float("nan")), torch.full((len(keys), 4), float("nan"))
        pos = torch.as_tensor(list(wanted), dtype=torch.long)
        at = torch.as_tensor([store["index"][keys[i]] for i in wanted], dtype=torch.long)
        feats[pos], boxes[pos] = store["features"][at], store["boxes"][at]
        return feats, boxes

    def _dim(self) -> int:
        sizes = self.vlm.sizes
        return sizes.vision_width if self.kind == "pre_proj" else sizes.embed_dim

    @torch.no_grad()
    def _compute(self, dataset: Dataset) -> tuple[Tensor, Tensor]:
        # a private generator: building the store must not advance the global RNG (a cold and a warm store
        # would otherwise give the same cell different dropout draws)
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(0))
        original = next(self.vlm.parameters()).device
        self.vlm.to(self.device)
        feats, boxes = [], []
        try:
            for batch in loader:
                with self._autocast():
                    out = self.vlm.frozen_image_features(batch["pixels"].to(self.device),
                                                         pre_proj=self.kind == "pre_proj")
                feats.append(out.float().cpu())
                boxes.append(batch["box"].float())
        finally:
            self.vlm.to(original)
        return torch.cat(feats), torch.cat(boxes)


def vars_of(obj: Any) -> dict[str, Any]:
    """Public scalar attributes of a transform, for its description."""
    return {k: v for k, v in sorted(vars(obj).items()) if isinstance(v, int | float | str | tuple)}


# --- store files (one torch.save dict per StoreSpec, written atomically) ----------------------------------
def empty_store(dim: int = 0) -> dict[str, Any]:
    return {"keys": [], "sigs": [], "features": torch.zeros(0, dim), "boxes": torch.zeros(0, 4), "index": {}}


def load_store(path: Path, spec: StoreSpec) -> dict[str, Any]:
    if not path.is_file():
        return empty_store()
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt store is rebuilt, never trusted
        log.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
        return empty_store()
    if blob.get("version") != STORE_VERSION or blob.get("spec") != asdict(spec):
        log.warning("feature cache %s does not match its key; recomputing", path)
        return empty_store()
    store = {k: blob[k] for k in ("keys", "sigs", "features", "boxes")}
    store["index"] = {k: i for i, k in enumerate(store["keys"])}
    return store


def update_store(store: dict[str, Any], keys: list[str], sigs: list[str], feats: Tensor, boxes: Tensor) -> None:
    """Insert or overwrite rows."""
    if not store["keys"]:
        store["features"] = feats.new_zeros(0, feats.shape[1])
    new_rows = []
    for j, (k, s) in enumerate(zip(keys, sigs)):
        i = store["index"].get(k)
        if i is None:
            new_rows.append(j)
            store["index"][k] = len(store["keys"])
            store["keys"].append(k)
            store["sigs"].append(s)
        else:
            store["features"][i] = feats[j]
            store["boxes"][i] = boxes[j]
            store["sigs"][i] = s
    if new_rows:
        sel = torch.as_tensor(new_rows, dtype=torch.long)
        store["features"] = torch.cat([store["features"], feats[sel]])
        store["boxes"] = torch.cat([store["boxes"], boxes[sel]])


def save_store(path: Path, spec: StoreSpec, store: dict[str, Any]) -> None:
    blob = {"version": STORE_VERSION, "spec": asdict(spec), "keys": store["keys"], "sigs": store["sigs"],
            "features": store["features"].contiguous(), "boxes": store["boxes"].contiguous()}
    atomic_write(path, lambda p: torch.save(blob, p))


# --- cached datasets and loaders -----------------------------------------------------------------------
class CachedFeatureDataset(Dataset):
    """A role's rows with `features` from the cache in place of `pixels`.

    `views` holds one (N, D) tensor per cached view; with several, each sample's view comes from the batch
    sampler's per-sample augmentation seed when it passes (index, seed) keys, else from a generator seeded by
    `seed`. Supports batched fetching (`__getitems__`), so a batch costs one gather."""

    def __init__(self, base: ManifestDataset, views: list[Tensor], boxes: list[Tensor], seed: int = 0) -> None:
        if not views or any(v.shape[0] != len(base) for v in views):
            raise ValueError("every cached view needs one feature row per dataset row")
        self.base = base
        self.views = torch.stack(views)  # (V, N, D)
        self.boxes = torch.stack(boxes)  # (V, N, 4)
        self.generator = torch.Generator().manual_seed(seed)
        self.class_ids = torch.as_tensor(base.class_ids, dtype=torch.long)
        self.labels = torch.as_tensor(base.labels, dtype=torch.long)
        self.domain_ids = torch.as_tensor(base.domain_ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])

    def __getitems__(self, indices: list[int] | list[tuple[int, int]]) -> dict[str, Any]:
        """Keys are row indices, or (row index, augmentation seed) pairs from a seeded batch sampler."""
        keys = list(indices)
        seeded = bool(keys) and all(isinstance(k, tuple | list) for k in keys)
        idx = torch.as_tensor([k[0] if isinstance(k, tuple | list) else k for k in keys], dtype=torch.long)
        n_views = self.views.shape[0]
        if n_views > 1 and seeded:  # the sampler's per-sample seed picks the view: identical after a resume
            v = torch.as_tensor([int(k[1]) % n_views for k in keys], dtype=torch.long)
        elif n_views > 1:
            v = torch.randint(0, n_views, (idx.numel(),), generator=self.generator)
        else:
            v = torch.zeros(idx.numel(), dtype=torch.long)
        out: dict[str, Any] = {"features": self.views[v, idx], "box": self.boxes[v, idx],
                               "class_id": self.class_ids[idx], "label": self.labels[idx],
                               "domain_id": self.domain_ids[idx], "index": idx}
        if self.base.captions is not None:
            out["caption"] = [(self.base.captions[i] or [""])[0] for i in idx.tolist()]
            out["negatives"] = [self.base.negatives[i] for i in idx.tolist()]
        return out


def collate_features(items: Any) -> dict[str, Any]:
    """Batches come pre-assembled from `__getitems__`; single items (batch_size=None) pass through too."""
    if isinstance(items, dict):
        return items
    if len(items) == 1:
        return items[0]
    raise TypeError("collate_features expects the dict built by CachedFeatureDataset.__getitems__")


class CachedFeatureData(L.LightningDataModule):
    """A cell's DataModule with cached frozen features in place of pixels (H14), for a cacheable method.

    Features of every role are computed (or read back from the store) once, in `prepare()`; loaders are built
    on demand and follow the wrapped DataModule: `train_dataloader()` reuses its batch sampler (same batches,
    same per-sample seeds, the same `skip_batches` fast-forward on resume) at its current `batch_size`, so a
    runner that sets the batch size per phase and lets Lightning ask for the loader gets the same behaviour
    as without the cache. Under DDP the loader is built after the process group is up, like the DataModule's.
    """

    def __init__(self, method: Any, datamodule: Any, cache_dir: str | Path | None = None, *,
                 device: str | torch.device | None = None, precision: str | None = None,
                 train_rows: Sequence[int] | None = None) -> None:
        super().__init__()
        if not getattr(method, "cacheable", False):
            raise ConfigError(f"method '{method.name}' is not cacheable: its trainable parts see the image encoder")
        datamodule.setup()
        self.dm = datamodule
        self.kind = getattr(method, "cache_feature", "post_proj")
        self.cache = FeatureCache(method.vlm, cache_dir, kind=self.kind, device=device, precision=precision,
                                  batch_size=datamodule.eval_batch_size, num_workers=datamodule.num_workers)
        self.n_views = parse_augmentation(method.cfg.get("cache_augmentation", "none"))
        self.train_rows = train_rows  # only these train rows are read (a capped run); None: all
        self._features: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
        self._eval: dict[str, DataLoader] = {}
        self.prepare_s = 0.0

    @property
    def augmentation(self) -> str:
        return "none" if self.n_views == 0 else f"views:{self.n_views}"

    def role_features(self, role: str) -> tuple[list[Tensor], list[Tensor]]:
        """([features per view], [boxes per view]) of a role; train has one per cached view."""
        if role not in self._features:
            views = [-1] if role != "train" or self.n_views == 0 else list(range(self.n_views))
            rows = self.train_rows if role == "train" else None
            pairs = [self.cache.role_features(self.dm, role, view=v, rows=rows) for v in views]
            self._features[role] = ([p[0] for p in pairs], [p[1] for p in pairs])
        return self._features[role]

    def prepare(self, roles: tuple[str, ...] = ("train", *EVAL_ROLES), train_batches: int | None = None
                ) -> CachedFeatureData:
        """Compute or read back the features of `roles` now (the cell's one encoder pass over its images).

        `train_batches`: the run reads only the first that many train batches (a short run), so only their
        rows are needed; beyond one epoch, or with None, every train row is."""
        t0 = time.perf_counter()
        if train_batches is not None and "train" in roles and self.train_rows is None:
            self.train_rows = rows_read(self.dm, train_batches)
        for role in roles:
            self.role_features(role)
        self.prepare_s += time.perf_counter() - t0
        return self

    def train_dataloader(self) -> DataLoader:
        orig = self.dm.train_dataloader()  # at the DataModule's current batch size, rank-aware under DDP
        feats, boxes = self.role_features("train")
        ds = CachedFeatureDataset(orig.dataset, feats, boxes, seed=self.dm.seed)
        return DataLoader(ds, batch_sampler=orig.batch_sampler, generator=orig.generator,
                          collate_fn=collate_features)

    def eval_dataloader(self, role: str) -> DataLoader:
        """Cached features of one evaluation role, in manifest order (as `RetrievalDataModule.eval_dataloader`)."""
        if role not in EVAL_ROLES:
            raise ConfigError(f"unknown evaluation role '{role}'; known: {', '.join(EVAL_ROLES)}")
        if role not in self._eval:
            feats, boxes = self.role_features(role)
            ds = CachedFeatureDataset(self.dm.dataset_for(role), feats, boxes)
            self._eval[role] = DataLoader(ds, batch_size=self.dm.eval_batch_size, shuffle=False,
                                          collate_fn=collate_features)
        return self._eval[role]

    def val_dataloader(self) -> list[DataLoader]:
        """[val_query, val_gallery] when the protocol has a validation split, else [] (as the DataModule)."""
        if len(self.dm.role_frame("val_query")) and len(self.dm.role_frame("val_gallery")):
            return [self.eval_dataloader("val_query"), self.eval_dataloader("val_gallery")]
        return []

    def test_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader("query"), self.eval_dataloader("gallery")]

    def describe(self) -> dict[str, Any]:
        """What the record says about the cache: store files, policy, what was computed or reused, timings."""
        stores = dict(self.cache.stores)
        return {"used": True, "kind": self.kind, "augmentation": self.augmentation,
                "store": stores.get("eval") or next(iter(stores.values()), None), "stores": stores,
                "precision": self.cache.precision, "build_s": round(self.cache.compute_s, 4),
                "prepare_s": round(self.prepare_s, 4), "stats": dict(self.cache.stats),
                "train_rows": "all" if self.train_rows is None else len(set(self.train_rows))}


def rows_read(datamodule: Any, n_batches: int) -> list[int] | None:
    """Train rows of the first `n_batches` batches of the DataModule's first epoch at its current batch size
    (the sampler is a pure function of seed and epoch), or None when that is the whole epoch or more."""
    sampler = datamodule.train_dataloader().batch_sampler  # a fresh sampler at epoch 0
    if n_batches >= len(sampler):
        return None
    rows: set[int] = set()
    for b, batch in enumerate(sampler):
        if b >= n_batches:
            break
        rows.update(int(k[0]) if isinstance(k, tuple | list) else int(k) for k in batch)
    return sorted(rows)


def build_cached_loaders(method: Any, datamodule: Any, cache_dir: str | Path | None = None, *,
                         device: str | torch.device | None = None, precision: str | None = None,
                         train_rows: Sequence[int] | None = None,
                         ) -> tuple[DataLoader, Callable[[str], DataLoader]]:
    """(train loader, eval-loader factory by role) serving cached features to a cacheable method.

    The train loader reuses the DataModule's batch sampler (and generator), so batches are the same as
    `datamodule.train_dataloader()`'s. `train_rows` restricts the train features to rows a capped run reads.
    Records what it did under `method.notes["feature_cache"]`."""
    data = CachedFeatureData(method, datamodule, cache_dir, device=device, precision=precision,
                             train_rows=train_rows)
    train_loader = data.train_dataloader()

    def eval_loader(role: str) -> DataLoader:
        loader = data.eval_dataloader(role)
        method.notes["feature_cache"]["stats"] = dict(data.cache.stats)
        return loader

    method.notes["feature_cache"] = {"kind": data.kind, "augmentation": data.augmentation,
                                     "dir": str(data.cache.cache_dir), "stats": dict(data.cache.stats)}
    return train_loader, eval_loader
