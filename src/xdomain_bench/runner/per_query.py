"""Per-query results beside a cell's record: `records/<slug>.per_query.npz`, a compressed numpy archive written
atomically with fixed zip timestamps (same results, same bytes), named in the record with its sha256.

Arrays: top_index/top_score (Nq, k), ap and n_relevant (Nq,) from the engine (eval/per_query.py), the query and
gallery rows' class ids, domains and manifest relpaths, the query class names, and `meta` (a JSON string: k,
AP rule, dataset and data root, so thumbnails can be read from the dataset's own files)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import XBenchError
from ..eval.per_query import AP_METRIC, PerQuery
from ..io_utils import atomic_write

SUFFIX = ".per_query.npz"
FORMAT = 1
_EPOCH = (1980, 1, 1, 0, 0, 0)


def per_query_path(records_dir: str | Path, slug: str) -> Path:
    return Path(records_dir) / f"{slug}{SUFFIX}"


def _strings(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=str)


def per_query_arrays(pq: PerQuery, dm) -> dict[str, np.ndarray]:
    """The collector's arrays plus what identifies each query and gallery row (manifest order)."""
    q, g = dm.role_frame("query"), dm.role_frame("gallery")
    out = pq.arrays()
    if out["top_index"].shape[0] != len(q) or pq.n_gallery != len(g):
        raise XBenchError(f"per-query results cover {out['top_index'].shape[0]} queries x {pq.n_gallery} gallery "
                          f"items but the manifest has {len(q)} x {len(g)}")
    out.update(query_class=q["class_id"].to_numpy(np.int64), gallery_class=g["class_id"].to_numpy(np.int64),
               query_relpath=_strings(q["relpath"]), gallery_relpath=_strings(g["relpath"]),
               query_domain=_strings(q["domain"]), gallery_domain=_strings(g["domain"]),
               query_class_name=_strings(q["class_name"]))
    meta = {"format": FORMAT, "top_k": int(out["top_index"].shape[1]), "ap": AP_METRIC,
            "ap_tie_mode": pq.ap_tie_mode, "dataset": dm.dataset_name, "data_root": str(Path(dm.root).resolve())}
    out["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    return out


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed's layout, with fixed timestamps so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_per_query(records_dir: str | Path, slug: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write the archive atomically; the record's `per_query` entry (file name, sha256, size, k, AP rule)."""
    data = _npz_bytes(arrays)
    path = per_query_path(records_dir, slug)
    atomic_write(path, lambda p: p.write_bytes(data))
    meta = json.loads(str(arrays["meta"]))
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "top_k": meta["top_k"], "ap": f"{meta['ap']} ({meta['ap_tie_mode']} ties)"}


def read_per_query(records_dir: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """The arrays a record's `per_query` entry names (meta decoded into a dict), after checking the hash."""
    path = Path(records_dir) / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise XBenchError(f"per-query results {path} unreadable: {exc}") from None
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise XBenchError(f"per-query results {path} do not match the hash in their record (rewritten or "
                          "truncated); re-run the cell")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        out: dict[str, Any] = {name: z[name] for name in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out
