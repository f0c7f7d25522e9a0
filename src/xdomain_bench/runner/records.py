"""Result records: one JSON file per cell, written atomically (ARCHITECTURE.md, Results)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import XBenchError
from ..io_utils import atomic_write_json

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One point of a suite matrix."""

    method: str
    dataset: str
    protocol: str
    variant: str = "clean"
    holdout: str | None = None
    seed: int = 0
    backbone: str = "tiny-clip"
    method_variant: str | None = None
    budget: str = "paper"  # a budget label: paper | matched:SAMPLES | steps:STEPS (runner/budget.py)
    data_options: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        parts = [f"method={self.method}", f"dataset={self.dataset}", f"protocol={self.protocol}",
                 f"variant={self.variant}", f"holdout={self.holdout}", f"seed={self.seed}", f"backbone={self.backbone}"]
        if self.method_variant:
            parts.append(f"method_variant={self.method_variant}")
        if self.data_options:
            parts.append("data=" + json.dumps(self.data_options, sort_keys=True))
        if self.method_overrides:
            parts.append("overrides=" + json.dumps(self.method_overrides, sort_keys=True))
        parts.append(f"budget={self.budget}")
        return "|".join(parts)

    def slug(self) -> str:
        """A readable, unique, filesystem-safe file stem."""
        digest = hashlib.sha256(self.key().encode()).hexdigest()[:10]
        bits = [self.method, self.dataset, self.protocol, self.variant, self.holdout or "-",
                str(self.data_options.get("gallery", "")) or "-", f"s{self.seed}"]
        safe = "_".join(b.replace("/", "-").replace(":", "-") for b in bits)
        return f"{safe}_{digest}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_path(out_dir: str | Path, cell: Cell) -> Path:
    return Path(out_dir) / "records" / f"{cell.slug()}.json"


def write_record(out_dir: str | Path, cell: Cell, record: dict[str, Any]) -> Path:
    path = record_path(out_dir, cell)
    atomic_write_json(path, record)
    return path


def read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise XBenchError(f"unreadable record {path}: {exc}; delete it and re-run its cell") from None


def row_identity(cell: dict[str, Any], record: dict[str, Any] | None = None, *, backbone: str | None = None) -> tuple:
    """What names one row of the long leaderboard: method, dataset, protocol, variant, holdout, gallery,
    backbone, budget, selection tag and seed. Rows that differ in any of these are never averaged; two records
    with all of it in common but another cell key were made with different settings and must not both count.

    The backbone is `backbone` if given (the leaderboard's label), else the record's weights hash, else the
    cell's spec with known checkpoints under one name (`ViT-B/32`). The selection tag needs the record."""
    from ..leaderboard.identity import backbone_key, budget_label, record_backbone, selection_tag

    gallery = (cell.get("data_options") or {}).get("gallery")
    if backbone is None:
        spec, sha = record_backbone(record) if record is not None else (cell.get("backbone"), None)
        backbone = backbone_key(spec or cell.get("backbone"), sha)
    return (cell["method"], cell["dataset"], cell["protocol"], cell.get("variant"), cell.get("holdout"), gallery,
            backbone, budget_label(cell, record), selection_tag(record), cell.get("seed"))


def read_records(out_dir: str | Path) -> list[dict[str, Any]]:
    folder = Path(out_dir) / "records"
    if not folder.is_dir():
        raise XBenchError(f"no records under {folder}; run `xbench run ... --out {out_dir}` first")
    return [read_record(p) for p in sorted(folder.glob("*.json"))]


def existing_ok_record(out_dir: str | Path, cell: Cell) -> dict[str, Any] | None:
    path = record_path(out_dir, cell)
    if not path.is_file():
        return None
    rec = read_record(path)
    return rec if rec.get("status") == "ok" else None


def code_version() -> dict[str, Any]:
    """Git commit of the suite's checkout and whether it had local changes."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            return {"git_commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    from .. import __version__

    return {"git_commit": None, "package_version": __version__}


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "lightning", "transformers", "torchmetrics", "numpy", "pandas", "faiss-cpu", "xdomain_bench"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def new_record(cell: Cell) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_key": cell.key(),
        "cell": cell.to_dict(),
        "method": cell.method,
        "dataset": cell.dataset,
        "protocol": cell.protocol,
        "variant": cell.variant,
        "holdout": cell.holdout,
        "seed": cell.seed,
        "status": "running",
        "error": None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "library_versions": library_versions(),
    }
