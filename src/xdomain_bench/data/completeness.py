"""Is the tree complete? The card's (or a synthetic tree's) class lists and domains against the folders.

Adapters list what is missing (`DatasetAdapter.missing_parts`, relative paths; a trailing `/` marks a
domain folder). A missing part is a one-line error unless the protocol option `allow_missing_classes`
is set; then the run goes on and its notes carry `nonstandard` and the missing parts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import DataError
from .listing import short_list

log = logging.getLogger(__name__)
ALLOW_OPTION = "allow_missing_classes"
HOW_TO_ALLOW = (f"pass {ALLOW_OPTION}=true to use the partial tree (`xbench run ... --set data."
                f"{ALLOW_OPTION}=true`, `xbench data manifest ... --set data.{ALLOW_OPTION}=true`; results are then "
                "marked nonstandard)")


def incomplete_tree_error(dataset_dir: Path, missing: list[str]) -> DataError:
    """One line naming what is missing: domain folders with their full path, then class folders."""
    domains = [str(dataset_dir / m.rstrip("/")) for m in missing if m.endswith("/")]
    classes = [m for m in missing if not m.endswith("/")]
    parts = []
    if domains:
        parts.append(f"missing domain folder {short_list(domains)}")
    if classes:
        parts.append(f"{len(classes)} class folder(s) missing under {dataset_dir} ({short_list(classes)})")
    return DataError(f"{'; '.join(parts)}; the tree is incomplete: complete the download, or {HOW_TO_ALLOW}")


def check_complete(adapter: Any, root: str | Path, protocol: str, holdout: str | None,
                   allow: bool) -> list[str]:
    """The missing parts of the tree (see module doc); raises unless `allow`."""
    missing = adapter.missing_parts(root, protocol, holdout)
    if missing and not allow:
        raise incomplete_tree_error(adapter.dataset_dir(root), missing)
    return missing


def warn_incomplete(name: str, root: str | Path, missing: list[str]) -> None:
    if missing:
        log.warning("%s tree under %s is incomplete (%s); going on because %s=true, results are nonstandard",
                    name, root, short_list(missing), ALLOW_OPTION)


def missing_notes(missing: list[str]) -> dict[str, Any]:
    """Notes a manifest or run carries when it was made from an incomplete tree."""
    return {"nonstandard": True, "missing_parts": list(missing)} if missing else {}
