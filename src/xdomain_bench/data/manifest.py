"""Frozen manifests (PROTOCOLS.md §1.2): one ordered row per sample, CSV + `.meta.json` sidecar."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError
from ..io_utils import atomic_write, atomic_write_json

GENERATOR_VERSION = "2"  # 2: canonical relpaths (Sketchy, TU-Berlin), FDRD annotations by content
ROLES = ("train", "val_query", "val_gallery", "query", "gallery")
BASE_COLUMNS = ["relpath", "class_name", "class_id", "domain", "role"]
OPTIONAL_COLUMNS = ["captions", "hard_negatives", "box", "image_id"]
JSON_COLUMNS = ("captions", "hard_negatives", "box")


@dataclass
class Manifest:
    """Rows (a DataFrame in normative order) plus sidecar metadata."""

    rows: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def role(self, role: str) -> pd.DataFrame:
        return self.rows[self.rows["role"] == role].reset_index(drop=True)

    def counts(self) -> dict[str, int]:
        return {r: int((self.rows["role"] == r).sum()) for r in ROLES}


def assemble(records: list[dict[str, Any]], meta: dict[str, Any]) -> Manifest:
    """Order rows normatively (role order, then (domain, class_name, relpath)) and fill the sidecar counts."""
    for rec in records:
        if rec["role"] not in ROLES:
            raise ValueError(f"bad role {rec['role']!r}")
    order = {r: i for i, r in enumerate(ROLES)}
    records = sorted(records, key=lambda r: (order[r["role"]], r["domain"], r["class_name"], r["relpath"]))
    extra = [c for c in OPTIONAL_COLUMNS if any(c in r for r in records)]
    df = pd.DataFrame(records, columns=BASE_COLUMNS + extra)
    df["class_id"] = df["class_id"].astype(int)
    meta = dict(meta)
    meta["generator_version"] = GENERATOR_VERSION
    meta["counts"] = {r: int((df["role"] == r).sum()) for r in ROLES}
    per = Counter(zip(df["role"], df["domain"], df["class_name"]))
    meta["counts_per_role_domain_class"] = {f"{r}|{d}|{c}": n for (r, d, c), n in sorted(per.items())}
    return Manifest(df, meta)


def _encode(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in JSON_COLUMNS:
        if col in out:
            out[col] = [json.dumps(v, ensure_ascii=False) if v is not None else "" for v in out[col]]
    return out


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write `path` (CSV) and `path.meta.json` atomically; byte-identical for identical input."""
    path = Path(path)
    csv_text = _encode(manifest.rows).to_csv(index=False, lineterminator="\n")
    atomic_write(path, lambda p: p.write_bytes(csv_text.encode("utf-8")))
    atomic_write_json(sidecar_path(path), manifest.meta)
    return path


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest back and check its row counts against the sidecar."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}; write one with `xbench data manifest`")
    try:
        df = pd.read_csv(path, dtype={"relpath": str, "class_name": str, "domain": str, "role": str, "image_id": str},
                         keep_default_na=False)
    except Exception as exc:  # pandas raises many types for malformed CSV
        raise DataError(f"malformed manifest {path}: {exc}") from None
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"manifest {path} lacks columns {missing}; expected header {','.join(BASE_COLUMNS)}")
    for col in JSON_COLUMNS:
        if col in df:
            df[col] = [json.loads(v) if v else None for v in df[col]]
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        meta = json.loads(side.read_text(encoding="utf-8"))
        expected = meta.get("counts", {})
        actual = {r: int((df["role"] == r).sum()) for r in ROLES}
        for role, n in expected.items():
            if actual.get(role, 0) != n:
                raise DataError(
                    f"manifest {path}: {actual.get(role, 0)} '{role}' rows but its sidecar says {n}; "
                    "the file was edited or truncated, rebuild it with `xbench data manifest`"
                )
    return Manifest(df, meta)
