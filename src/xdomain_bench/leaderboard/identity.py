"""What makes two leaderboard rows the same: backbone (by weights where known), budget and selection tag.

Backbones are compared by what they are, not how they were spelled. A known checkpoint has one canonical
name (`ViT-B/32`) whether the record says `hf-clip:openai/clip-vit-base-patch32` or loaded it from a local
directory whose weights hash is known. Records with equal weights hashes are the same backbone; records that
share a name but not a hash are not (the label then carries the first 8 hex digits of the hash).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

UNSTATED_BUDGET = "unstated"
TEST_SELECTED = "test-selected"

# Canonical name -> hub ids and common spellings, and file SHA-256s of its weights where we know them
# (add a hash here to recognise the checkpoint when it is loaded from a local directory).
KNOWN_BACKBONES: dict[str, dict[str, tuple[str, ...]]] = {
    "ViT-B/32": {"aliases": ("openai/clip-vit-base-patch32", "ViT-B-32", "clip-vit-b-32"), "sha256": ()},
    "ViT-B/16": {"aliases": ("openai/clip-vit-base-patch16", "ViT-B-16", "clip-vit-b-16"), "sha256": ()},
    "ViT-L/14": {"aliases": ("openai/clip-vit-large-patch14", "ViT-L-14", "clip-vit-l-14"), "sha256": ()},
    "ViT-L/14@336px": {"aliases": ("openai/clip-vit-large-patch14-336", "ViT-L-14-336"), "sha256": ()},
}
_BY_ALIAS = {a.lower(): name for name, known in KNOWN_BACKBONES.items() for a in (name, *known["aliases"])}
_BY_SHA = {h.lower(): name for name, known in KNOWN_BACKBONES.items() for h in known["sha256"]}


def canonical_backbone(spec: str | None, sha256: str | None = None) -> str | None:
    """The canonical name of a known checkpoint, from its weights hash or its name; None when unknown.

    A local directory (`hf-clip:/models/x`) is recognised only by its hash: a folder name says nothing
    certain about the weights inside."""
    if sha256 and sha256.lower() in _BY_SHA:
        return _BY_SHA[sha256.lower()]
    if not spec:
        return None
    name = spec.strip()
    if name.lower().startswith("hf-clip:"):
        name = name.split(":", 1)[1]
    return _BY_ALIAS.get(name.lower())


def backbone_key(spec: str | None, sha256: str | None = None) -> str:
    """A backbone's identity without the rest of a run: its weights hash, else its canonical name, else its spec."""
    if sha256:
        known = _BY_SHA.get(sha256.lower())
        return known or f"sha256:{sha256.lower()}"
    return canonical_backbone(spec) or (spec or "")


def record_backbone(rec: dict[str, Any]) -> tuple[str, str | None]:
    """(spec name, weights SHA-256 or None) of a record; a record without a backbone description (a cell that
    failed before loading it) gives its cell's spec."""
    desc = rec.get("backbone") if isinstance(rec.get("backbone"), dict) else {}
    name = desc.get("name") or (rec.get("cell") or {}).get("backbone") or ""
    return str(name), desc.get("weights_sha256") or None


def budget_label(cell: dict[str, Any], rec: dict[str, Any] | None = None) -> str:
    """The cell's training-budget label ("paper", "matched:2560", "steps:40"); "unstated" for older records."""
    label = cell.get("budget")
    if not label and rec is not None:
        label = (rec.get("budget") or {}).get("label") if isinstance(rec.get("budget"), dict) else None
    return str(label) if label else UNSTATED_BUDGET


NONSTANDARD = "nonstandard"
IMAGE_ZERO_SHOT = "image side = zero-shot"


def image_side_is_zero_shot(rec: dict[str, Any]) -> bool:
    """A trained method whose training leaves the image embedding frozen, on an image-to-image protocol."""
    return rec.get("embedding_side") == "text" and rec.get("task") not in (None, "itr")


def selection_tag(rec: dict[str, Any] | None) -> str:
    """The row's tags, comma-separated, "" for none: "test-selected" where model selection saw the test split,
    "nonstandard" where the data differ from the protocol's (missing classes or files allowed, images skipped),
    "image side = zero-shot" where training changed only the text side and the protocol ranks images by
    images. Tagged rows are never averaged with untagged ones, nor ranked."""
    rec = rec or {}
    selection = rec.get("selection")
    tags = [str(selection.get("tag"))] if isinstance(selection, dict) and selection.get("tag") else []
    if (rec.get("notes") or {}).get("nonstandard") or rec.get("skipped_images"):
        tags.append(NONSTANDARD)
    if image_side_is_zero_shot(rec):
        tags.append(IMAGE_ZERO_SHOT)
    return ", ".join(tags)


def settings_fingerprint(cell: dict[str, Any]) -> str:
    """Everything a cell sets apart from its row identity: overrides, method variant, data options."""
    skip = {"method", "dataset", "protocol", "variant", "holdout", "seed", "backbone", "budget", "max_steps"}
    return json.dumps({k: v for k, v in sorted(cell.items()) if k not in skip}, sort_keys=True, default=str)


@dataclass
class BackboneNames:
    """Display labels for the backbones of one set of records, one label per distinct backbone.

    Equal hashes share a label (the canonical name if any spelling is known, else the shortest spec); equal
    specs with different hashes get `#<8 hex>` suffixes; a spec without a hash takes the label of the one
    hash seen under that spec, if there is exactly one."""

    by_sha: dict[str, str] = field(default_factory=dict)
    by_spec: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> BackboneNames:
        specs_of: dict[str, set[str]] = {}
        for rec in records:
            spec, sha = record_backbone(rec)
            if sha:
                specs_of.setdefault(sha.lower(), set()).add(spec)
        names = cls()
        base: dict[str, str] = {}
        for sha, specs in specs_of.items():
            canon = _BY_SHA.get(sha) or next((c for c in map(canonical_backbone, sorted(specs)) if c), None)
            base[sha] = canon or min(specs, key=lambda s: (len(s), s))
        clashes = {label for label in base.values() if list(base.values()).count(label) > 1}
        for sha, label in base.items():
            names.by_sha[sha] = f"{label}#{sha[:8]}" if label in clashes and label not in KNOWN_BACKBONES else label
        hashes_of_spec: dict[str, set[str]] = {}
        for sha, specs in specs_of.items():
            for spec in specs:
                hashes_of_spec.setdefault(spec, set()).add(sha)
        for spec, hashes in hashes_of_spec.items():
            if len(hashes) == 1:
                names.by_spec[spec] = names.by_sha[next(iter(hashes))]
        return names

    def label(self, spec: str | None, sha256: str | None = None) -> str:
        if sha256 and sha256.lower() in self.by_sha:
            return self.by_sha[sha256.lower()]
        if spec in self.by_spec:
            return self.by_spec[spec]
        return canonical_backbone(spec, sha256) or (spec or "unknown")

    def of_record(self, rec: dict[str, Any]) -> str:
        return self.label(*record_backbone(rec))
