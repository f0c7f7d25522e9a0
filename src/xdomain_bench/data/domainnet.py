"""DomainNet (UCDR family): protocols ucdr / uccdr / udcdr, variants clean / paper (PROTOCOLS.md §2)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, unknown_name
from .base import DatasetAdapter, VerifyReport, read_class_list, register_dataset
from .completeness import ALLOW_OPTION, check_complete, missing_notes
from .domainnet_splits import check_split_files
from .listing import is_image_name, listing_sha256, scandir_names
from .manifest import Manifest, assemble
from .sampling import sample_split as _sample_split
from .verify_utils import compare_counts, find_bad_images

log = logging.getLogger(__name__)
SYNTH_SIDECAR = ".xbench_synth.json"  # = synth.sketch_pairs.SYNTH_MARKER; the synth package never imports this module
# (domain, class) pairs that may lack a folder in a complete tree: PROTOCOLS §2.2's known gap.
KNOWN_GAPS = {("painting", "t-shirt")}
PROTOCOL_OPTIONS = {"ucdr": ("gallery", "paper_profile", "merge_val_classes"),
                    "uccdr": ("gallery", "seen", "paper_profile", "merge_val_classes"),
                    "udcdr": ("paper_profile", "merge_val_classes")}


@dataclass
class Listing:
    """Sorted file names per (domain, class) plus everything the listing rule set aside."""

    root: Path  # the DomainNet folder
    files: dict[tuple[str, str], list[str]]
    skipped: list[str] = field(default_factory=list)  # relpaths of non-image / hidden files
    ignored_dirs: list[str] = field(default_factory=list)  # sub-directories that are not domains
    unknown_class_dirs: list[str] = field(default_factory=list)
    missing_domains: list[str] = field(default_factory=list)

    def relpaths(self) -> list[str]:
        return [f"{d}/{c}/{f}" for (d, c), names in self.files.items() for f in names]

    def sha256(self) -> str:
        return listing_sha256(self.relpaths())

    def domain_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (d, _), names in self.files.items():
            out[d] = out.get(d, 0) + len(names)
        out["total"] = sum(out.values())
        return out


@dataclass(frozen=True)
class Setting:
    """A fully resolved (protocol, variant, holdout, options)."""

    protocol: str
    variant: str
    holdout: str
    seen_domain: str
    gallery: str | None
    paper_profile: str | None
    seen_classes: tuple[str, ...]  # the seed list for the 92 % rule and the mixed gallery
    validation: bool
    merge_val_classes: bool = False  # the val classes train too (after the seen ones); no val split

    @property
    def name(self) -> str:
        return f"holdout-{self.holdout}_seen-{self.seen_domain}"


def sample_split(files: list[str], frac: float, seed: int) -> tuple[list[str], list[str]]:
    """PROTOCOLS §1.3, skipping the RNG for empty (domain, class) pairs."""
    return _sample_split(files, frac, seed) if files else ([], [])


def _scan_folder(folder: Path, rel: str, skipped: list[str]) -> list[str]:
    """Listing rule (§1.2): regular files directly inside, no dot-names, image extensions; sorted."""
    keep = []
    for entry in scandir_names(folder):
        if entry.is_file() and is_image_name(entry.name):
            keep.append(entry.name)
        elif entry.is_file():
            skipped.append(f"{rel}/{entry.name}")
    return sorted(keep)


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in scandir_names(folder) if e.is_dir() and not e.name.startswith("."))


@register_dataset("domainnet")
class DomainNet(DatasetAdapter):
    name = "domainnet"
    folder = "DomainNet"

    def __init__(self) -> None:
        super().__init__()
        lists = self.card["class_lists"]
        self.train_classes = read_class_list(lists["train"])
        self.val_classes = read_class_list(lists["val"])
        self.test_classes = read_class_list(lists["test"])
        self.class_names = self.train_classes + self.val_classes + self.test_classes
        self.class_index = {c: i for i, c in enumerate(self.class_names)}
        if len(self.class_index) != len(self.class_names):
            raise DataError("DomainNet class lists overlap; the shipped datasets/splits files are corrupt")
        self.domains: list[str] = list(self.card["domains"])
        self.gallery_domain: str = self.card["gallery_domain"]
        self.settings = {s["holdout"]: s["seen"] for s in self.card["settings"]}
        self.udcdr_classes = self.train_classes[: int(self.card["udcdr_num_classes"])]

    # --- settings ---------------------------------------------------------------------------------
    def holdouts(self, protocol: str) -> list[str | None]:
        return list(self.settings)

    def train_query_domains(self, holdout: str) -> list[str]:
        """All domains except the holdout and the gallery domain (auxiliaries on, §2.3)."""
        return [d for d in self.domains if d not in (holdout, self.gallery_domain)]

    def resolve(self, protocol: str, variant: str = "clean", holdout: str | None = None,
                **options: Any) -> Setting:
        """Validate arguments and fill defaults; raises ConfigError naming the bad value."""
        self.protocol_info(protocol)
        if variant not in ("clean", "paper"):
            raise unknown_name("variant", variant, ["clean", "paper"])
        holdout = holdout or self.default_holdout(protocol)
        if holdout not in self.settings:
            raise unknown_name("DomainNet holdout domain", str(holdout), list(self.settings))
        allowed = PROTOCOL_OPTIONS[protocol]
        for key in options:
            if key not in allowed:
                raise ConfigError(f"domainnet protocol '{protocol}' takes no option '{key}'; "
                                  f"its options: {', '.join(allowed)}")
        profiles = self.card["paper_profiles"]
        profile = options.get("paper_profile")
        if variant == "paper":
            if profile is None:
                raise ConfigError(f"variant 'paper' needs paper_profile; one of {', '.join(profiles)}")
            if profile not in profiles:
                raise unknown_name("DomainNet paper profile", profile, list(profiles))
        elif profile is not None:
            raise ConfigError(f"paper_profile='{profile}' only applies to variant 'paper', not '{variant}'")
        gallery = options.get("gallery", "unseen") if protocol != "udcdr" else None
        if gallery not in (None, "unseen", "mixed"):
            raise unknown_name("DomainNet gallery", str(gallery), ["unseen", "mixed"])
        seen = options.get("seen", self.settings[holdout])
        if seen not in self.train_query_domains(holdout):
            raise ConfigError(f"seen domain '{seen}' is not a training query domain for holdout '{holdout}'; "
                              f"choose one of {', '.join(self.train_query_domains(holdout))}")
        lists = profiles[profile]["seen"] if profile else ["train"]
        seen_classes = tuple(c for name in lists for c in getattr(self, f"{name}_classes"))
        validation = bool(profiles[profile]["validation"]) if profile else True
        merge = options.get("merge_val_classes", False)
        if not isinstance(merge, bool):
            raise ConfigError(f"merge_val_classes must be true or false, not {merge!r}")
        return Setting(protocol, variant, holdout, seen, gallery, profile, seen_classes, validation and not merge,
                       merge)

    def trained_classes(self, s: Setting) -> tuple[str, ...]:
        """Classes with `train` rows: the seen ones, then (merge_val_classes) the val ones not already seen;
        the list index is the seed of the 92 % real draw (train ‖ val order, as the `pros` profile)."""
        extra = tuple(c for c in self.val_classes if c not in s.seen_classes) if s.merge_val_classes else ()
        return s.seen_classes + extra

    # --- listing ----------------------------------------------------------------------------------
    def scan(self, root: str | Path, strict: bool = True) -> Listing:
        """List the six domains; a missing domain folder raises (strict) or is recorded."""
        dn = self.dataset_dir(root)
        listing = Listing(dn, {})
        for name in _subdirs(dn):
            if name not in self.domains:
                listing.ignored_dirs.append(name)
                log.warning("ignoring %s/: not one of the DomainNet domains %s", dn / name, self.domains)
        for domain in self.domains:
            ddir = dn / domain
            if not ddir.is_dir():
                if strict:
                    raise DataError(f"missing domain folder {ddir}; expected {self.layout_hint()}")
                listing.missing_domains.append(domain)
                continue
            listing.unknown_class_dirs += [f"{domain}/{c}" for c in _subdirs(ddir) if c not in self.class_index]
            for cls in self.class_names:
                cdir = ddir / cls
                files = _scan_folder(cdir, f"{domain}/{cls}", listing.skipped) if cdir.is_dir() else []
                listing.files[(domain, cls)] = files
        listing.skipped.sort()
        return listing

    def listing_sha256(self, root: str | Path) -> str:
        return self.scan(root, strict=False).sha256()

    def missing_parts(self, root: str | Path, protocol: str, holdout: str | None = None) -> list[str]:
        """Domain folders (`<domain>/`) and `<domain>/<class>` folders of the six domains and 345 classes
        that the tree lacks, apart from the known gaps."""
        dn = self.dataset_dir(root)
        missing: list[str] = []
        for domain in self.domains:
            if not (dn / domain).is_dir():
                missing.append(f"{domain}/")
                continue
            have = set(_subdirs(dn / domain))
            missing += [f"{domain}/{c}" for c in self.class_names
                        if c not in have and (domain, c) not in KNOWN_GAPS]
        return missing

    # --- manifest ---------------------------------------------------------------------------------
    def build_manifest(self, root: str | Path, protocol: str, variant: str = "clean",
                       holdout: str | None = None, **options: Any) -> Manifest:
        allow = bool(options.pop(ALLOW_OPTION, False))
        setting = self.resolve(protocol, variant, holdout, **options)
        self.dataset_dir(root)
        missing = check_complete(self, root, protocol, setting.holdout, allow)
        listing = self.scan(root, strict=False)
        for domain in listing.missing_domains:  # allowed above: an absent domain lists no files
            listing.files.update({(domain, c): [] for c in self.class_names})
        split_check = check_split_files(listing, self.domains, self.class_index)
        manifest = self.manifest_from_listing(listing, setting, {"split_files": split_check})
        if allow:
            manifest.meta["options"][ALLOW_OPTION] = True
        manifest.meta["notes"].update(missing_notes(missing))
        return manifest

    def manifest_from_listing(self, listing: Listing, s: Setting, extra_meta: dict | None = None) -> Manifest:
        """The manifest of one resolved setting, with its sidecar metadata."""
        manifest = assemble(self.records(listing, s), self._meta(listing, s, extra_meta or {}))
        rows = manifest.rows
        overlap = set(rows.loc[rows["role"] == "gallery", "relpath"]) & set(rows.loc[rows["role"] == "train", "relpath"])
        manifest.meta["gallery_train_overlap"] = len(overlap)
        manifest.meta["notes"].update(self._notes(s, len(overlap)))
        return manifest

    def records(self, listing: Listing, s: Setting,
                parts: tuple[str, ...] = ("train", "val", "test")) -> list[dict[str, Any]]:
        """Unordered manifest rows of one resolved setting (PROTOCOLS §2.4–2.7), for the given parts."""
        frac = self.card["fractions"]
        records: list[dict[str, Any]] = []

        def add(domain: str, cls: str, names: list[str], role: str) -> None:
            cid = self.class_index[cls]
            records.extend({"relpath": f"{domain}/{cls}/{n}", "class_name": cls, "class_id": cid,
                            "domain": domain, "role": role} for n in names)

        real = self.gallery_domain
        udcdr = set(self.udcdr_classes)
        held_out: dict[str, list[str]] = {}
        trained = self.trained_classes(s)
        if "train" in parts:  # §2.4.1
            for domain in self.train_query_domains(s.holdout):
                for cls in trained:
                    add(domain, cls, listing.files[(domain, cls)], "train")
        if "train" in parts or ("test" in parts and s.gallery == "mixed"):  # §2.4.2-3
            for i, cls in enumerate(trained):
                files = listing.files[(real, cls)]
                chosen, held_out[cls] = sample_split(files, frac["train_real"], seed=i)
                if s.variant == "clean" and cls in udcdr:
                    chosen = chosen[int(frac["udcdr_clean_removed"] * len(files)):]
                if "train" in parts:
                    add(real, cls, chosen, "train")
        if "val" in parts and s.validation:  # §2.6
            for domain in self.train_query_domains(s.holdout):
                for i, cls in enumerate(self.val_classes):
                    add(domain, cls, sample_split(listing.files[(domain, cls)], frac["val_query"], seed=i)[0],
                        "val_query")
            for cls in self.val_classes:
                add(real, cls, listing.files[(real, cls)], "val_gallery")
        if "test" not in parts:
            return records
        if s.protocol == "udcdr":  # §2.7
            p = frac["udcdr"].get(s.holdout, frac["udcdr"]["default"])
            for i, cls in enumerate(self.udcdr_classes):
                add(s.holdout, cls, sample_split(listing.files[(s.holdout, cls)], p, seed=i)[0], "query")
                add(real, cls, sample_split(listing.files[(real, cls)], p, seed=i)[0], "gallery")
        else:  # §2.5
            qdom = s.holdout if s.protocol == "ucdr" else s.seen_domain
            for cls in self.test_classes:
                add(qdom, cls, listing.files[(qdom, cls)], "query")
                add(real, cls, listing.files[(real, cls)], "gallery")
            if s.gallery == "mixed":
                for cls in s.seen_classes:
                    add(real, cls, held_out[cls], "gallery")
        return records

    def _meta(self, listing: Listing, s: Setting, extra: dict[str, Any]) -> dict[str, Any]:
        frac = self.card["fractions"]
        seed_list = "train" if len(self.trained_classes(s)) == len(self.train_classes) else "train+val"
        meta = {
            "dataset": self.name, "protocol": s.protocol, "variant": s.variant, "holdout": s.holdout,
            "setting": s.name, "seen_domain": s.seen_domain, "gallery": s.gallery,
            "paper_profile": s.paper_profile,
            "options": {k: v for k, v in (("gallery", s.gallery), ("seen", s.seen_domain),
                                          ("paper_profile", s.paper_profile),
                                          ("merge_val_classes", s.merge_val_classes or None)) if v is not None},
            "train_query_domains": self.train_query_domains(s.holdout),
            "seeds": {
                "rule": "numpy RandomState(seed).permutation over the sorted files; seed = 0-based class index",
                "train_real": {"frac": frac["train_real"], "seed_list": seed_list},
                "val_query": {"frac": frac["val_query"], "seed_list": "val"} if s.validation else None,
                "udcdr": {"frac": frac["udcdr"], "seed_list": "train[:45]"},
                "clean_removed_from_train": frac["udcdr_clean_removed"] if s.variant == "clean" else None,
            },
            "inverted_domains": sorted(self.inverted_domains(s.variant)),
            "listing_sha256": listing.sha256(),
            "image_counts": listing.domain_counts(),
            "class_names": self.class_names,
            "skipped_files": listing.skipped,
            "ignored_dirs": listing.ignored_dirs,
            "unknown_class_dirs": listing.unknown_class_dirs,
            "empty_pairs": sorted(f"{d}/{c}" for (d, c), f in listing.files.items() if not f),
            "notes": {},
        }
        meta.update(extra)
        return meta

    def _notes(self, s: Setting, overlap: int) -> dict[str, Any]:
        notes: dict[str, Any] = {"setting": s.name, "selection": "val split (val_query vs val_gallery)"}
        if s.paper_profile and not s.validation:
            notes["selection"] = f"upstream '{s.paper_profile}' selects on test (allow_test_selection)"
        elif s.merge_val_classes:
            notes["selection"] = "none: the val classes are trained on (merge_val_classes), so final weights"
        if s.merge_val_classes:
            notes["merged_val_classes"] = (
                f"{len(self.trained_classes(s))} training classes (train ‖ val); no val split, since val "
                f"scores would come from trained classes; the test roles are unchanged")
        if s.variant == "clean":
            notes["udcdr_fix"] = ("clean: the first floor(0.25 n) permutation elements of real/<c> for the 45 "
                                  "UdCDR classes are removed from train, so the UdCDR gallery is disjoint "
                                  f"from training (gallery/train overlap here: {overlap})")
        elif s.protocol == "udcdr":
            notes["udcdr_overlap"] = (f"paper: {overlap} gallery images are also train images (upstream "
                                      "behaviour; only the query domain is unseen)")
        if s.gallery == "mixed":
            notes["mixed_gallery"] = (f"real images of the test classes + the held-out 8 % of "
                                      f"{len(s.seen_classes)} seen classes; not comparable across profiles")
        return notes

    # --- verify / synth ---------------------------------------------------------------------------
    def verify(self, root: str | Path, skip_bad_images: bool = False, check_images: bool = True) -> VerifyReport:
        """Counts vs the card (or the synth sidecar), layout, split files, split sizes, unreadable images."""
        dn = self.dataset_dir(root)
        report = VerifyReport(self.name, str(dn))
        listing = self.scan(root, strict=False)
        problems = report.problems
        problems += [f"missing domain folder {dn / d}; expected {self.layout_hint()}" for d in listing.missing_domains]
        problems += [f"{dn / c}: class folder not in the DomainNet class lists; rename or remove it"
                     for c in listing.unknown_class_dirs]
        found = listing.domain_counts()
        report.counts.update({f"images/{k}": v for k, v in found.items()})
        report.counts["skipped_files"] = len(listing.skipped)
        report.counts["ignored_dirs"] = len(listing.ignored_dirs)
        problems += self._count_problems(listing, found)
        check = check_split_files(listing, self.domains, self.class_index)
        report.warnings += [str(dn / m) for m in check["malformed"]]
        if check["malformed_count"] > len(check["malformed"]):
            report.warnings.append(f"{dn}: {check['malformed_count'] - len(check['malformed'])} more malformed "
                                   "split-file lines not listed")
        problems += [f"{dn}: split files name unknown class '{c}'" for c in check["unknown_classes"]]
        problems += [f"{dn}: split files give {c}" for c in check["label_conflicts"]]
        if check["missing_on_disk_count"]:
            problems.append(f"{dn}: {check['missing_on_disk_count']} files named in split files are missing, "
                            f"e.g. {', '.join(check['missing_on_disk'][:5])}")
        if not listing.missing_domains:
            report.counts.update(self.split_sizes(listing))
        if check_images:
            bad = find_bad_images(dn / r for r in listing.relpaths())
            report.counts["bad_images"] = len(bad)
            if not skip_bad_images:
                problems += [reason for _, reason in bad]
        return report

    def _count_problems(self, listing: Listing, found: dict[str, int]) -> list[str]:
        side = listing.root / SYNTH_SIDECAR
        if side.is_file():
            synth = json.loads(side.read_text(encoding="utf-8"))
            per_class = {f"{d}/{c}": len(f) for (d, c), f in listing.files.items()}
            return (compare_counts(found, synth["counts"], str(listing.root), f"the synth sidecar {side.name}")
                    + compare_counts(per_class, synth["per_class"], str(listing.root), "the synth sidecar"))
        out = compare_counts(found, self.card["expected_counts"], str(listing.root), "the card (PROTOCOLS §2.2)")
        want = int(self.card["quickdraw_per_class"])
        off = [c for c in self.class_names if len(listing.files.get(("quickdraw", c), [])) != want]
        if off and "quickdraw" not in listing.missing_domains:
            out.append(f"{listing.root / 'quickdraw'}: {len(off)} classes do not have exactly {want} images, "
                       f"e.g. {', '.join(off[:5])}")
        return out

    def split_sizes(self, listing: Listing) -> dict[str, int]:
        """Role sizes of every standard setting (clean): what each manifest sidecar would record."""
        out: dict[str, int] = {}
        for h in self.settings:
            full = self.resolve("ucdr", "clean", h, gallery="mixed")
            roles = Counter(r["role"] for r in self.records(listing, full))
            for role in ("train", "val_query", "val_gallery"):
                out[f"{full.name}/{role}"] = roles[role]
            out[f"{full.name}/ucdr/query"] = roles["query"]
            out[f"{full.name}/gallery_unseen"] = sum(len(listing.files[(self.gallery_domain, c)])
                                                     for c in self.test_classes)
            out[f"{full.name}/gallery_mixed"] = roles["gallery"]
            for protocol in ("uccdr", "udcdr"):
                test = Counter(r["role"] for r in self.records(listing, self.resolve(protocol, "clean", h),
                                                               parts=("test",)))
                out[f"{full.name}/{protocol}/query"] = test["query"]
            out[f"{full.name}/udcdr/gallery"] = test["gallery"]
        return out

    def synth(self, root: str | Path, scale: str = "tiny", seed: int = 0) -> Path:
        from .synth.domainnet import synth_domainnet

        return synth_domainnet(self, root, scale=scale, seed=seed)
