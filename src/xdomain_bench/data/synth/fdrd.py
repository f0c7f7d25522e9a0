"""Synthetic FDRD twin: CoOp-layout images for pets, flowers and aircraft plus caption files in the
released JSON format (PROTOCOLS.md §6.2), with the released quirks (§6.3) and CoOp split files.

CoOp split formats written here: `split_zhou_<Name>.json` = {"train"|"val"|"test": [[impath, label,
classname], ...]} with impath relative to the image folder; `fgvc_aircraft/images_variant_<split>.txt`
= "<7-digit id> <variant>" per line; `fgvc_aircraft/variants.txt` = one variant per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import ConfigError
from ...io_utils import atomic_write_json, atomic_write_text
from .objects import COLOURS, class_specs, render

PETS = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon", "Persian",
    "Ragdoll", "Russian_Blue", "Siamese", "Sphynx", "american_bulldog", "american_pit_bull_terrier",
    "basset_hound", "beagle", "boxer", "chihuahua", "english_cocker_spaniel", "english_setter",
    "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
    "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard", "samoyed", "scottish_terrier",
    "shiba_inu", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
)
FLOWERS = (
    "pink_primrose", "hard-leaved_pocket_orchid", "canterbury_bells", "sweet_pea", "english_marigold",
    "tiger_lily", "moon_orchid", "bird_of_paradise", "monkshood", "globe_thistle", "snapdragon",
    "colt's_foot", "king_protea", "spear_thistle", "yellow_iris", "globe-flower", "purple_coneflower",
    "peruvian_lily", "balloon_flower", "giant_white_arum_lily", "fire_lily", "pincushion_flower",
    "fritillary", "red_ginger", "grape_hyacinth", "corn_poppy", "prince_of_wales_feathers",
    "stemless_gentian", "artichoke", "sweet_william", "carnation", "garden_phlox", "love_in_the_mist",
    "mexican_aster", "alpine_sea_holly", "ruby-lipped_cattleya", "cape_flower", "great_masterwort",
    "siam_tulip", "lenten_rose", "barbeton_daisy", "daffodil", "sword_lily", "poinsettia", "bolero_deep_blue",
    "wallflower", "marigold", "buttercup", "oxeye_daisy", "common_dandelion", "petunia", "wild_pansy",
    "primula", "sunflower", "pelargonium", "bishop_of_llandaff", "gaura", "geranium", "orange_dahlia",
    "pink-yellow_dahlia", "cautleya_spicata", "japanese_anemone", "black-eyed_susan", "silverbush",
    "californian_poppy", "osteospermum", "spring_crocus", "bearded_iris", "windflower", "tree_poppy",
    "gazania", "azalea", "water_lily", "rose", "thorn_apple", "morning_glory", "passion_flower", "lotus",
    "toad_lily", "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree_mallow",
    "magnolia", "cyclamen", "watercress", "canna_lily", "hippeastrum", "bee_balm", "ball_moss", "foxglove",
    "bougainvillea", "camellia", "mallow", "mexican_petunia", "bromelia", "blanket_flower", "trumpet_creeper",
    "blackberry_lily",
)
AIRCRAFT = (
    "707-320", "727-200", "737-200", "737-300", "737-400", "737-500", "737-600", "737-700", "737-800",
    "737-900", "747-100", "747-200", "747-300", "747-400", "757-200", "757-300", "767-200", "767-300",
    "767-400", "777-200", "777-300", "A300B4", "A310", "A318", "A319", "A320", "A321", "A330-200", "A330-300",
    "A340-200", "A340-300", "A340-500", "A340-600", "A380", "ATR-42", "ATR-72", "An-12", "BAE 146-200",
    "BAE 146-300", "BAE-125", "Beechcraft 1900", "Boeing 717", "C-130", "C-47", "CRJ-200", "CRJ-700",
    "CRJ-900", "Cessna 172", "Cessna 208", "Cessna 525", "Cessna 560", "Challenger 600", "DC-10", "DC-3",
    "DC-6", "DC-8", "DC-9-30", "DH-82", "DHC-1", "DHC-6", "DHC-8-100", "DHC-8-300", "DR-400", "Dornier 328",
    "E-170", "E-190", "E-195", "EMB-120", "ERJ 135", "ERJ 145", "Embraer Legacy 600", "Eurofighter Typhoon",
    "F-16A/B", "F/A-18", "Falcon 2000", "Falcon 900", "Fokker 100", "Fokker 50", "Fokker 70",
    "Global Express", "Gulfstream IV", "Gulfstream V", "Hawk T1", "Il-76", "L-1011", "MD-11", "MD-80",
    "MD-87", "MD-90", "Metroliner", "Model B200", "PA-28", "SR-20", "Saab 2000", "Saab 340", "Spitfire",
    "Tornado", "Tu-134", "Tu-154", "Yak-42",
)
# tiny: a few classes per dataset, chosen to cover the naming quirks (cats vs dogs, apostrophes and
# hyphens, variants with spaces and slashes).
TINY = {
    "oxford_pets": ("Abyssinian", "British_Shorthair", "Egyptian_Mau", "american_pit_bull_terrier",
                    "keeshond", "shiba_inu"),
    "oxford_flowers": ("pink_primrose", "hard-leaved_pocket_orchid", "colt's_foot", "sword_lily", "sunflower",
                       "rose"),
    "fgvc_aircraft": ("707-320", "A300B4", "BAE 146-200", "Cessna 172", "F-16A/B", "F/A-18"),
}
# (train+val, test) images per class (flowers add 0-2 to train+val); val fraction of train+val as in CoOp
PER_CLASS = {"tiny": {"oxford_pets": (5, 4), "oxford_flowers": (5, 4), "fgvc_aircraft": (5, 4)},
             "small": {"oxford_pets": (20, 12), "oxford_flowers": (7, 4), "fgvc_aircraft": (8, 4)}}
VAL_FRACTION = {"oxford_pets": 0.2, "oxford_flowers": 0.285, "fgvc_aircraft": 0.5}
FILE_TAG = {"oxford_pets": "pets", "oxford_flowers": "flower", "fgvc_aircraft": "plane"}


@dataclass
class _Image:
    key: str
    class_name: str
    relpath: str  # from the data root
    caption: str
    negatives: list[str]
    split: str  # train / val / test
    number: str = ""  # flowers
    file_id: str = ""  # aircraft
    scene: tuple[str, str, str] = ("", "", "")  # size word, place, background (scene_words)
    subject: tuple[str, str] = ("", "")  # class as captions name it, its attribute description


def write_synth(root: Path, scale: str = "tiny", seed: int = 0, image_size: int = 64) -> Path:
    """Write the synthetic tree under `root`; returns `<root>/FDRD`."""
    if scale not in ("tiny", "small"):
        raise ConfigError(f"unknown synth scale '{scale}'; known scales: small, tiny")
    rng = np.random.default_rng(seed)
    expected: dict[str, dict] = {"entries": {}, "classes": {}, "coop": {}, "unverified": []}
    quirks: dict[str, dict[str, int]] = {}
    for k, (ds, all_names) in enumerate((("oxford_pets", PETS), ("oxford_flowers", FLOWERS),
                                         ("fgvc_aircraft", AIRCRAFT))):
        names = list(TINY[ds] if scale == "tiny" else all_names)
        images = _draw(root, ds, names, scale, rng, image_size)
        _attribute_negatives(images, np.random.default_rng([seed, k]))  # own generator: test split unchanged
        quirks[ds] = _inject_quirks(images, rng, n=1 if scale == "tiny" else 2, root=root)
        _write_captions(root, ds, images)
        _write_splits(root, ds, names, images)
        tag = FILE_TAG[ds]
        n = {s: sum(im.split == s for im in images) for s in ("train", "val", "test")}
        expected["entries"][f"{tag}_test.json"] = n["test"]
        expected["entries"][f"{tag}_train.json"] = n["train"] + n["val"]
        expected["classes"][ds] = len(names)
        expected["coop"][ds] = n
    fdrd = root / "FDRD"
    atomic_write_json(fdrd / ".xbench_synth.json", {"scale": scale, "seed": seed, "expected_counts": expected,
                                                    "quirks": quirks})
    return fdrd


def _display(ds: str, name: str) -> str:
    return name if ds == "fgvc_aircraft" else name.replace("_", " ")


def _colour_name(pixels: np.ndarray) -> str:
    mean = pixels.reshape(-1, 3).mean(0)
    return min(COLOURS, key=lambda c: float(((np.array(COLOURS[c]) - mean) ** 2).sum()))


def scene_words(box: tuple[int, int, int, int], img: Image.Image, size: int) -> tuple[str, str, str]:
    """What a caption can say about one render besides its class: size word, place, background colours."""
    cx, cy = (box[0] + box[2]) / size / 2, (box[1] + box[3]) / size / 2
    horiz = "left" if cx < 0.53 else "right" if cx > 0.62 else "centre"
    vert = "top" if cy < 0.44 else "bottom" if cy > 0.53 else "middle"
    area = (box[2] - box[0]) * (box[3] - box[1]) / (size * size)
    size_word = "small" if area < 0.17 else "large" if area > 0.25 else "medium"
    arr = np.asarray(img, dtype=np.float64)
    left, right = _colour_name(arr[:, :3]), _colour_name(arr[:, -3:])
    return size_word, f"{vert} {horiz}", left if left == right else f"{left}-to-{right}"


def scene_caption(display: str, describe: str, scene: tuple[str, str, str], medium: str = "photo") -> str:
    """The caption of one render (`scene_words`); demo-clip's pretraining uses it too, naming other media."""
    size_word, place, bg = scene
    return f"a {medium} of a {display}, a {size_word} {describe} at the {place} on a {bg} background."


SIZES = ("small", "medium", "large")
PLACES = tuple(f"{v} {h}" for v in ("top", "middle", "bottom") for h in ("left", "centre", "right"))
# the words a scene caption adds to a class caption (colour names come with the class descriptions)
SCENE_WORDS = tuple(dict.fromkeys([*SIZES, *(w for p in PLACES for w in p.split()), "at", "background", "to"]))


def _attribute_negatives(images: list[_Image], rng: np.random.Generator) -> None:
    """Train and val captions get same-class hard negatives: the caption with its size, place, background
    and place again swapped for another value (background: another image's); test keeps class swaps."""
    backgrounds = sorted({im.scene[2] for im in images})
    for im in images:
        if im.split == "test":
            continue
        out = []
        for slot, pool in ((0, SIZES), (1, PLACES), (2, backgrounds), (1, PLACES)):
            texts = [scene_caption(*im.subject, tuple(v if i == slot else w for i, w in enumerate(im.scene)))
                     for v in pool if v != im.scene[slot]]
            texts = [t for t in texts if t not in out]
            if texts:
                out.append(texts[int(rng.integers(len(texts)))])
        im.negatives = out


def _draw(root: Path, ds: str, names: list[str], scale: str, rng: np.random.Generator,
          size: int) -> list[_Image]:
    """Render and save every image of one dataset; captions unique where a few re-draws allow."""
    specs = class_specs(names, salt=f"fdrd/{ds}")
    out: list[_Image] = []
    used: set[str] = set()
    number = 0
    ids = rng.choice(2_400_000, size=len(names) * 64, replace=False)
    for ci, name in enumerate(names):
        trainval, test = PER_CLASS[scale][ds]
        if ds == "oxford_flowers":
            trainval += ci % 3  # flowers classes differ in size
        n_val = int(round(VAL_FRACTION[ds] * trainval))
        val_pos = set(rng.permutation(trainval)[:n_val].tolist())
        splits = ["val" if i in val_pos else "train" for i in range(trainval)] + ["test"] * test
        subject = (_display(ds, name), specs[name].describe())
        for i, split in enumerate(splits):
            for _ in range(8):
                img, box = render(specs[name], "photo", rng, size=size)
                scene = scene_words(box, img, size)  # grounded in the render: size, place, background colours
                caption = scene_caption(*subject, scene)
                if caption not in used:
                    break
            k = 2
            while caption in used:  # rare: keep captions unique so the injected quirks are the only ones
                caption = caption.removesuffix(f" (view {k - 1}).").removesuffix(".") + f" (view {k})."
                k += 1
            used.add(caption)
            number += 1
            im = _image(ds, name, i + 1, number, f"{int(ids[number]):07d}", caption, split)
            im.scene, im.subject = scene, subject
            path = root / im.relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=90)
            out.append(im)
    for im in out:
        others = [n for n in names if n != im.class_name]
        picks = rng.choice(len(others), size=min(4, len(others)), replace=False)
        im.negatives = [im.caption.replace(_display(ds, im.class_name), _display(ds, others[int(p)]), 1)
                        for p in picks]
    return out


def _image(ds: str, name: str, n: int, number: int, file_id: str, caption: str, split: str) -> _Image:
    if ds == "oxford_pets":
        key = f"{name}_{n}"
        return _Image(key, name, f"oxford_pets/images/{key}.jpg", caption, [], split)
    if ds == "oxford_flowers":
        num = f"{number:05d}"
        return _Image(f"{name}_image_{num}", name, f"oxford_flowers/jpg/image_{num}.jpg", caption, [], split,
                      num)
    key = f"{name.replace('/', '_')}_{file_id}"
    return _Image(key, name, f"fgvc_aircraft/images/{file_id}.jpg", caption, [], split, file_id=file_id)


def _inject_quirks(images: list[_Image], rng: np.random.Generator, n: int, root: Path) -> dict[str, int]:
    """§6.3 quirks in the test split: `n` duplicate-caption pairs (identical images), `n` negative lists
    holding the positive (one only up to whitespace), `n` lists with a repeated negative."""
    test = [im for im in images if im.split == "test"]
    by_class: dict[str, list[_Image]] = {}
    for im in test:
        by_class.setdefault(im.class_name, []).append(im)
    classes = sorted(by_class)
    for k in range(n):
        a, b = by_class[classes[k]][0], by_class[classes[k]][1]
        b.caption, b.negatives = a.caption, list(a.negatives)
        (root / b.relpath).write_bytes((root / a.relpath).read_bytes())
    copies = {id(by_class[c][1]) for c in classes[:n]}
    rest = [im for im in test if len(im.negatives) >= 4 and id(im) not in copies]
    picks = rng.permutation(len(rest))[: 2 * n]
    for j, p in enumerate(picks[:n]):
        im = rest[int(p)]
        im.negatives[1] = im.caption if j else im.caption.replace(" ", "  ", 1)
    for p in picks[n:]:
        im = rest[int(p)]
        im.negatives[3] = im.negatives[2]
    return {"duplicate_caption_groups": n, "duplicate_caption_images": 2 * n,
            "negatives_containing_caption": n, "negatives_with_repeats": n}


def _write_captions(root: Path, ds: str, images: list[_Image]) -> None:
    """`FDRD/test/<tag>_test.json` and `FDRD/train/<tag>_train.json` in the released format."""
    tag = FILE_TAG[ds]
    for split in ("test", "train"):
        chosen = [im for im in images if (im.split == "test") == (split == "test")]
        obj = {}
        for im in chosen:
            rec: dict[str, object] = {"file_name": im.key}
            if ds == "oxford_flowers":
                rec.update(class_name=im.class_name, number=im.number,
                           file_path=f"/home/dcar/data/flowers102_renamed/{im.class_name}/{im.key}.jpg")
            elif ds == "fgvc_aircraft":
                rec.update(file_name=im.file_id, file_path="YOUR_IMAGE_PATH")
            else:
                rec["file_path"] = f"/home/dcar/data/{im.relpath}"
            negatives = [] if (ds == "fgvc_aircraft" and split == "train") else im.negatives
            rec.update(positive=im.caption, negative=negatives)
            obj[im.key] = rec
        text = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
        atomic_write_text(root / "FDRD" / split / f"{tag}_{split}.json", text)


def _write_splits(root: Path, ds: str, names: list[str], images: list[_Image]) -> None:
    """CoOp split files: split_zhou_*.json (pets, flowers) or images_variant_*.txt (aircraft)."""
    label = {n: i for i, n in enumerate(names)}
    if ds == "fgvc_aircraft":
        base = root / "fgvc_aircraft"
        atomic_write_text(base / "variants.txt", "".join(f"{n}\n" for n in names))
        for split in ("train", "val", "test"):
            lines = sorted(f"{im.file_id} {im.class_name}\n" for im in images if im.split == split)
            atomic_write_text(base / f"images_variant_{split}.txt", "".join(lines))
        return
    if ds == "oxford_pets":
        path, coop = root / "oxford_pets" / "split_zhou_OxfordPets.json", lambda n: n.lower()
    else:
        path, coop = root / "oxford_flowers" / "split_zhou_OxfordFlowers.json", lambda n: n.replace("_", " ")
    split_obj = {s: [[im.relpath.rsplit("/", 1)[-1], label[im.class_name], coop(im.class_name)]
                     for im in images if im.split == s] for s in ("train", "val", "test")}
    atomic_write_text(path, json.dumps(split_obj, indent=4) + "\n")
