"""DomainNet fixture trees in the official layout, using the real shipped class lists.

The expectations in the tests are derived here independently of the package: class lists are read
straight from `datasets/splits/`, and per-(domain, class) file counts follow the formula below.
"""

from __future__ import annotations

import io
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SPLITS = Path(__file__).resolve().parents[2] / "datasets" / "splits"
DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]


def read_list(name: str) -> list[str]:
    return (SPLITS / name).read_text(encoding="utf-8").splitlines()


TRAIN = read_list("domainnet_train_classes.txt")
VAL = read_list("domainnet_val_classes.txt")
TEST = read_list("domainnet_test_classes.txt")
ALL = TRAIN + VAL + TEST


def fixture_count(domain: str, cls: str) -> int:
    """Files per (domain, class) in the full fixture: 1..5, 10..14 for every sixth class, one empty pair."""
    if (domain, cls) == ("painting", "t-shirt"):
        return 0  # the known gap (PROTOCOLS §2.2)
    d, c = DOMAINS.index(domain), ALL.index(cls)
    return 1 + (7 * c + 5 * d) % 5 + (9 if c % 6 == 0 else 0)


def png_bytes(colour: tuple[int, int, int] = (255, 255, 255), size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, count: Callable[[str, str], int], data: bytes | None = None,
              empty_folders: bool = True) -> Path:
    """Write `<root>/DomainNet/<domain>/<class>/<domain>_<id>_<k>.png`."""
    data = data or png_bytes()
    dn = root / "DomainNet"
    for domain in DOMAINS:
        for cid, cls in enumerate(ALL):
            folder = dn / domain / cls
            if not empty_folders and not count(domain, cls):
                continue  # an absent class folder counts as 0 files
            folder.mkdir(parents=True)
            for k in range(count(domain, cls)):
                (folder / f"{domain}_{cid:03d}_{k:06d}.png").write_bytes(data)
    return dn


def sparse_count(domain: str, cls: str) -> int:
    """A cheap tree: only the first 3 classes of each list hold files (4 each)."""
    return 4 if cls in TRAIN[:3] + VAL[:3] + TEST[:3] else 0


class TreeModel:
    """The fixture tree's content, for tests: lists, counts, relpaths and the spec's sampling rule."""

    DOMAINS, TRAIN, VAL, TEST, ALL = DOMAINS, TRAIN, VAL, TEST, ALL

    @staticmethod
    def n(domain: str, cls: str) -> int:
        return fixture_count(domain, cls)

    @staticmethod
    def files_of(domain: str, cls: str) -> list[str]:
        cid = ALL.index(cls)
        return [f"{domain}/{cls}/{domain}_{cid:03d}_{k:06d}.png" for k in range(fixture_count(domain, cls))]

    @classmethod
    def chosen(cls, domain: str, name: str, percent: int, seed: int) -> list[str]:
        """PROTOCOLS §1.3 written out: RandomState(seed).permutation(n)[:floor(percent * n / 100)]."""
        files = cls.files_of(domain, name)
        perm = np.random.RandomState(seed).permutation(len(files))
        return [files[j] for j in perm[: len(files) * percent // 100]]


# Test modules import this file's helpers as `dn_fixture` (conftest is not importable by name under
# --import-mode=importlib).
sys.modules.setdefault("dn_fixture", sys.modules[__name__])


@pytest.fixture(scope="session")
def dn_root(tmp_path_factory) -> Path:
    """The full fixture tree (read-only for tests), plus clutter the listing rule must skip."""
    root = tmp_path_factory.mktemp("dn_full")
    dn = make_tree(root, fixture_count)
    (dn / "extra_domain" / "apple").mkdir(parents=True)
    (dn / "real" / "apple" / "notes.txt").write_text("not an image")
    (dn / "real" / "apple" / ".hidden.png").write_bytes(png_bytes())
    return root


@pytest.fixture
def sparse_root(tmp_path) -> Path:
    """Every class folder present (a complete tree), but only a few hold files."""
    root = tmp_path / "data"
    make_tree(root, sparse_count)
    return root


class _ShuffledScandir:
    """os.scandir stand-in yielding the real entries in a seeded random order."""

    def __init__(self, real, path):
        self.entries = list(real(path))
        random.Random(str(path)).shuffle(self.entries)

    def __enter__(self):
        return iter(self.entries)

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(self.entries)


@pytest.fixture
def shuffled_listing(monkeypatch):
    """Directory listings (os.scandir, os.listdir, Path.iterdir) in a random, non-sorted order; yields
    the real os.scandir so a test can check the shuffle took effect."""
    real_scandir, real_listdir, real_iterdir = os.scandir, os.listdir, Path.iterdir
    monkeypatch.setattr(os, "scandir", lambda p=".": _ShuffledScandir(real_scandir, p))
    monkeypatch.setattr(os, "listdir", lambda p=".": random.Random(str(p)).sample(real_listdir(p), len(real_listdir(p))))
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(random.Random(str(self)).sample(
        list(real_iterdir(self)), len(list(real_iterdir(self))))))
    yield real_scandir
    monkeypatch.undo()


def listing_is_shuffled(real_scandir, folder: Path) -> bool:
    """True when os.scandir(folder) now lists in another order than the real one."""
    return [e.name for e in os.scandir(folder)] != [e.name for e in real_scandir(folder)]


@pytest.fixture
def scratch(tmp_path) -> Path:
    """An empty folder of this test's own under pytest's tmp path."""
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def files_per_class(domain_dir: Path) -> dict[str, int]:
    """Image files in each class folder of one domain folder, counted on disk (not from any marker)."""
    return {d.name: sum(1 for f in d.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
            for d in domain_dir.iterdir() if d.is_dir()}


def two_domain_roles(classes: set[str], test: set[str], val: set[str], per_class: int,
                     variant: str) -> dict[str, int]:
    """Rows per role of a sketch/photo protocol (PROTOCOLS §3.2, §4.2) on a tree that holds `per_class` files of
    each class in both domains: test classes give queries (sketches) and gallery (photos); `clean` holds the val
    classes out as val_query / val_gallery and trains on the rest, `paper` trains on every non-test class."""
    held = test | val if variant == "clean" else test
    n_val = len(classes & val) * per_class if variant == "clean" else 0
    return {"train": 2 * per_class * len(classes - held), "val_query": n_val, "val_gallery": n_val,
            "query": per_class * len(classes & test), "gallery": per_class * len(classes & test)}
