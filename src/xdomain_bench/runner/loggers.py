"""Training logs through Lightning's own loggers (`--logger`): per cell under OUT/logs/<cell slug>/, one
Lightning run per phase (`<phase>/version_<n>/`), so the CSV logger's files are its standard
`OUT/logs/<slug>/<phase>/version_<n>/metrics.csv`. Every step logs the loss terms and the learning rate,
every validation the selection metric (`val_selection`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..errors import ConfigError

LOGGERS = ("csv", "tensorboard", "wandb", "none")
# What each optional logger imports, and the extra that installs it.
EXTRAS = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "wandb": (("wandb",), "wandb")}
LOGS_DIR = "logs"
WANDB_PROJECT = "xdomain_bench"


def check_logger(kind: str) -> str:
    """Validate `--logger` before any work: a known kind whose package is installed."""
    if kind not in LOGGERS:
        raise ConfigError(f"unknown --logger '{kind}'; use one of {', '.join(LOGGERS)}")
    modules, extra = EXTRAS.get(kind, ((), ""))
    if modules and not any(importlib.util.find_spec(m) for m in modules):
        raise ConfigError(f"--logger {kind} needs the '{extra}' extra, which is not installed: "
                          f"pip install 'xdomain_bench[{extra}]'")
    return kind


def cell_log_dir(out_dir: Path, slug: str) -> Path:
    return Path(out_dir) / LOGS_DIR / slug


def phase_logger(kind: str, out_dir: Path, slug: str, phase: str) -> Any:
    """The Lightning logger for one phase of one cell (False for `none`)."""
    save_dir = cell_log_dir(out_dir, slug)
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=save_dir, name=phase)
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=save_dir, name=phase, default_hp_metric=False)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        save_dir.mkdir(parents=True, exist_ok=True)
        return WandbLogger(save_dir=str(save_dir), name=f"{slug}/{phase}", group=slug, project=WANDB_PROJECT)
    return False


def logs_entry(kind: str, out_dir: Path, slug: str) -> dict[str, Any] | None:
    """The record's pointer to a cell's logs: kind, folder (relative to OUT) and, for CSV, every metrics file
    (relative to that folder; one per phase and run, a resumed phase adds a version)."""
    if kind == "none":
        return None
    folder = cell_log_dir(out_dir, slug)
    entry: dict[str, Any] = {"kind": kind, "dir": str(Path(LOGS_DIR) / slug)}
    if kind == "csv":
        entry["files"] = sorted(str(p.relative_to(folder)) for p in folder.glob("*/version_*/metrics.csv"))
    return entry
