"""Where the suite's cards, split lists and caches live."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The checkout holding `methods/`, `datasets/` and `benchmarks/` (src layout, editable install)."""
    env = os.environ.get("XBENCH_HOME")
    root = Path(env) if env else PACKAGE_DIR.parents[1]
    if not (root / "datasets" / "splits").is_dir():
        raise ConfigError(
            f"cannot find the suite's cards under {root}; install from a checkout with "
            "`pip install -e .` or set XBENCH_HOME to the checkout"
        )
    return root


def splits_dir() -> Path:
    return project_root() / "datasets" / "splits"


def dataset_cards_dir() -> Path:
    return project_root() / "datasets"


def method_cards_dir() -> Path:
    return project_root() / "methods"


def cache_dir() -> Path:
    """User cache directory (XBENCH_CACHE, else XDG cache)."""
    env = os.environ.get("XBENCH_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xdomain_bench"
    base.mkdir(parents=True, exist_ok=True)
    return base
