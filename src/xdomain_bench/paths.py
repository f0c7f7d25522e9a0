"""Where the suite's cards, split lists, suites, reported numbers and caches live.

Built-in resources are read from the package (`xdomain_bench/resources/`, filled by the wheel build from the
checkout's `methods/`, `datasets/` and `benchmarks/`) or, in a checkout, straight from those folders. External
cards folders (`xbench --cards DIR`, or XBENCH_CARDS, os.pathsep-separated, then each plugin package's `cards/`)
are searched first; each has the same layout: `methods/NAME.yaml`, `datasets/NAME.yaml`, `datasets/splits/FILE`, `suites/NAME.yaml`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES = PACKAGE_DIR / "resources"  # present in a wheel install only
CARDS_ENV = "XBENCH_CARDS"


def project_root() -> Path:
    """The checkout holding `methods/`, `datasets/` and `benchmarks/` (src layout), or XBENCH_HOME."""
    env = os.environ.get("XBENCH_HOME")
    root = Path(env) if env else PACKAGE_DIR.parents[1]
    if not (root / "datasets" / "splits").is_dir():
        raise ConfigError(
            f"cannot find the suite's cards under {root}; reinstall the package (its wheel ships them) or set "
            "XBENCH_HOME to a checkout"
        )
    return root


def _layout() -> dict[str, Path]:
    """Built-in resource folders: the package's copy when installed from a wheel, else the checkout's."""
    if "XBENCH_HOME" not in os.environ and (RESOURCES / "methods").is_dir():
        base = RESOURCES
        return {"methods": base / "methods", "datasets": base / "datasets", "suites": base / "suites",
                "reported": base / "reported.csv"}
    root = project_root()
    return {"methods": root / "methods", "datasets": root / "datasets", "suites": root / "benchmarks" / "suites",
            "reported": root / "benchmarks" / "reported.csv"}


def splits_dir() -> Path:
    return _layout()["datasets"] / "splits"


def dataset_cards_dir() -> Path:
    return _layout()["datasets"]


def method_cards_dir() -> Path:
    return _layout()["methods"]


def suites_dir() -> Path:
    return _layout()["suites"]


def reported_csv() -> Path:
    return _layout()["reported"]


def external_card_dirs() -> list[Path]:
    """External cards folders, in search order: XBENCH_CARDS (`--cards` prepends to it), then the `cards/`
    folder of each installed plugin package."""
    dirs = [Path(p) for p in os.environ.get(CARDS_ENV, "").split(os.pathsep) if p]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"cards folder {d} (from --cards or {CARDS_ENV}) does not exist")
    return dirs + [d for d in plugin_card_dirs() if d not in dirs]


@functools.cache
def plugin_card_dirs() -> list[Path]:
    """`<package>/cards` of every plugin package (entry points xdomain_bench.methods / .datasets), found
    without importing the plugin."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    out: list[Path] = []
    for group in ("xdomain_bench.methods", "xdomain_bench.datasets"):
        for ep in entry_points(group=group):
            spec = find_spec(ep.value.split(":")[0].split(".")[0])
            for location in (spec.submodule_search_locations or []) if spec else []:
                if (Path(location) / "cards").is_dir() and Path(location) / "cards" not in out:
                    out.append(Path(location) / "cards")
    return out


def find_resource(kind: str, filename: str, builtin: Path) -> Path:
    """`<cards dir>/<kind>/<filename>` from the first external cards folder that has it, else `builtin/filename`.
    `kind` is methods, datasets, datasets/splits or suites."""
    for d in external_card_dirs():
        path = d / kind / filename
        if path.is_file():
            return path
    return builtin / filename


def card_files(kind: str, builtin: Path, pattern: str = "*.yaml") -> dict[str, Path]:
    """name -> file for every card of `kind`: built-in ones, then external folders' (which win)."""
    out = {p.stem: p for p in sorted(builtin.glob(pattern))}
    for d in reversed(external_card_dirs()):
        out.update({p.stem: p for p in sorted((d / kind).glob(pattern))})
    return out


def cache_dir() -> Path:
    """User cache directory (XBENCH_CACHE, else XDG cache)."""
    env = os.environ.get("XBENCH_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xdomain_bench"
    base.mkdir(parents=True, exist_ok=True)
    return base


def suite_path(name_or_path: str | Path) -> Path:
    """A suite file: an existing path as given, else a suite name (external cards folders, then built-in)."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    return find_resource("suites", f"{path.name}.yaml", suites_dir())


def suite_names() -> list[str]:
    return sorted(card_files("suites", suites_dir()))
