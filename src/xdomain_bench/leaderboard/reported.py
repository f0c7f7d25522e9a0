"""Published numbers (benchmarks/reported.csv), put into the leaderboard's terms so that they join our rows only
on an exact match of dataset, protocol, variant, setting (query domain and gallery), metric and backbone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import XBenchError
from .identity import canonical_backbone
from .metrics import protocol_metrics, stored_from_reported

REPORTED_COLUMNS = ["method", "dataset", "protocol", "query_domain", "gallery", "metric", "value", "backbone", "source"]
ITR_GALLERY = "image↔text"  # an image-text setting retrieves both ways; its rows differ by source dataset only
# Source-dataset names papers use for FDRD's CoOp folders, beside the aliases the loader accepts.
SUBSET_ALIASES = {"flowers102": "oxford_flowers", "pets37": "oxford_pets", "aircraft100": "fgvc_aircraft"}


def read_reported(path: str | Path) -> pd.DataFrame:
    """The reported-numbers CSV as written (an optional `variant` column; `paper` where absent)."""
    path = Path(path)
    if not path.is_file():
        raise XBenchError(f"reported-numbers file not found: {path}; pass --reported FILE or --no-reported")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REPORTED_COLUMNS if c not in df.columns]
    if missing:
        raise XBenchError(f"{path} lacks columns {missing}; expected header {','.join(REPORTED_COLUMNS)}")
    bad = [i + 2 for i, v in enumerate(df["value"]) if not _is_number(v)]
    if bad:
        raise XBenchError(f"{path}: line {bad[0]}: value {df['value'].iloc[bad[0] - 2]!r} is not a number; "
                          "write it as a plain decimal (0.6052 or 60.52)")
    df["value"] = df["value"].astype(float)
    if "variant" not in df.columns:
        df["variant"] = "paper"
    df["variant"] = df["variant"].replace("", "paper")
    return df


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def subset_name(name: str) -> str:
    from ..data.fdrd_format import ALIASES

    key = name.strip()
    return SUBSET_ALIASES.get(key.lower()) or ALIASES.get(key.lower()) or key


def normalise_reported(df: pd.DataFrame, implemented: set[str]) -> pd.DataFrame:
    """Rows in our terms: canonical backbone names, values on our stored scale, image-text rows set by their
    source dataset (the file's query_domain; `average9` is the mean over nine) instead of by direction."""
    rows = []
    for r in df.to_dict("records"):
        info = protocol_metrics(r["dataset"], r["protocol"])
        query_domain, gallery = r["query_domain"], r["gallery"]
        if info is not None and info.task == "itr":
            query_domain, gallery = subset_name(query_domain), ITR_GALLERY
        rows.append({
            "method": r["method"], "dataset": r["dataset"], "protocol": r["protocol"], "variant": r["variant"],
            "query_domain": query_domain, "gallery": gallery, "metric": r["metric"],
            "value": stored_from_reported(r["metric"], float(r["value"])),
            "backbone": canonical_backbone(r["backbone"]) or r["backbone"], "reference": r["source"],
            "implemented": r["method"] in implemented,
        })
    return pd.DataFrame(rows, columns=["method", "dataset", "protocol", "variant", "query_domain", "gallery", "metric",
                                       "value", "backbone", "reference", "implemented"])


def implemented_methods() -> set[str]:
    from ..methods.base import method_names

    return set(method_names())


def reported_long(rep: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Reported rows for the long CSV: the published value on our stored scale, no seed, source `reported`."""
    out = rep.assign(seed="", budget="", selection="", source="reported", backbone_sha256="", embedding_side="")
    return out[columns]
