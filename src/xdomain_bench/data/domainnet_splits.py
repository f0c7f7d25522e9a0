"""DomainNet's optional official split files `<domain>_{train,test}.txt` (PROTOCOLS §2.1): a cross-check only.

No protocol uses them, so nothing here fails a manifest: malformed lines and undecodable files are
logged and counted, and disagreements with the tree are returned for `xbench data verify`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .listing import MAX_LISTED

if TYPE_CHECKING:
    from .domainnet import Listing

log = logging.getLogger(__name__)


def check_split_files(listing: Listing, domains: list[str], class_index: dict[str, int]) -> dict[str, Any]:
    """Parse the optional official `<domain>_{train,test}.txt` files and cross-check them with the tree.

    They only serve as a cross-check, so nothing here fails: a malformed line or an undecodable file is
    logged and counted (`malformed`, messages naming file and line), and mismatches are returned.
    """
    entries: dict[str, set[int]] = {}
    by_label: dict[int, set[str]] = {}
    names, missing, malformed, listed = [], [], [], 0
    on_disk = {(d, c): set(f) for (d, c), f in listing.files.items()}
    for domain in domains:
        for part in ("train", "test"):
            path = listing.root / f"{domain}_{part}.txt"
            if not path.is_file():
                continue
            names.append(path.name)
            try:
                lines = path.read_bytes().decode("utf-8").splitlines()
            except UnicodeDecodeError as exc:
                malformed.append(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start}); file ignored")
                continue
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                parsed = _parse_split_line(line, domain, len(class_index))
                if parsed is None:
                    malformed.append(f"{path.name}:{lineno}: malformed split-file line {line!r}; expected "
                                     f"'{domain}/<class>/<file> <label>' with one space and a label in "
                                     f"0..{len(class_index) - 1}; line ignored (the file is only a cross-check)")
                    continue
                cls, fname, label = parsed
                entries.setdefault(cls, set()).add(label)
                by_label.setdefault(label, set()).add(cls)
                listed += 1
                if fname not in on_disk.get((domain, cls), ()):
                    missing.append(f"{domain}/{cls}/{fname}")
    for message in malformed[:MAX_LISTED]:
        log.warning("%s", listing.root / message)
    conflicts = [f"class '{c}' labels {sorted(v)}" for c, v in sorted(entries.items()) if len(v) > 1]
    conflicts += [f"label {k} to classes {sorted(v)}" for k, v in sorted(by_label.items()) if len(v) > 1]
    return {"files": names, "entries": listed, "malformed_count": len(malformed),
            "malformed": malformed[:MAX_LISTED],
            "unknown_classes": sorted(c for c in entries if c not in class_index),
            "label_conflicts": conflicts, "missing_on_disk": missing[:20], "missing_on_disk_count": len(missing)}


def _parse_split_line(line: str, domain: str, n_classes: int) -> tuple[str, str, int] | None:
    """(class, file, label) of a well-formed `<domain>/<class>/<file> <label>` line, else None."""
    parts = line.split(" ")
    rel = parts[0].split("/")
    ok = (len(parts) == 2 and len(rel) == 3 and rel[0] == domain and all(rel)
          and parts[1].isdigit() and int(parts[1]) < n_classes)
    return (rel[1], rel[2], int(parts[1])) if ok else None
