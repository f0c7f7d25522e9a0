"""Procedural objects with visible attributes, rendered in several visual domains.

Each class gets a unique (shape, colour, pattern, part) combination, assigned deterministically
from its name; each image varies position, size, rotation and background. Domains change the style:
photo-like, clipart, painting, infographic (filled shapes), and sketch and quickdraw: unfilled strokes in the
object's colour on white. The loaders invert sketch domains as upstream does (DomainNet, Sketchy; TU-Berlin
in the clean variant), so a held-out sketch arrives as complementary-colour strokes on black.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "crescent", "heart", "arrow")
COLOURS = {
    "red": (210, 40, 40), "orange": (240, 140, 30), "yellow": (235, 210, 40), "green": (50, 160, 60),
    "teal": (30, 150, 150), "blue": (40, 80, 210), "purple": (130, 50, 180), "pink": (235, 120, 180),
    "brown": (130, 80, 40), "grey": (120, 120, 120), "black": (30, 30, 30), "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "dotted", "checkered")
PARTS = ("none", "wings", "legs", "handle", "spikes")
DOMAINS = ("real", "photo", "clipart", "painting", "sketch", "quickdraw", "infograph")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    pattern: str
    part: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    def attributes(self) -> list[str]:
        words = [self.colour, self.pattern, self.shape]
        if self.part != "none":
            words.append(f"with {self.part}")
        return words

    def describe(self) -> str:
        text = f"{self.colour} {self.pattern} {self.shape}"
        return text + (f" with {self.part}" if self.part != "none" else "")


N_COMBOS = len(SHAPES) * len(COLOURS) * len(PATTERNS) * len(PARTS)


def _combo(index: int) -> ObjectSpec:
    index %= N_COMBOS
    index, part = divmod(index, len(PARTS))
    index, pattern = divmod(index, len(PATTERNS))
    shape, colour = divmod(index, len(COLOURS))
    return ObjectSpec(SHAPES[shape], list(COLOURS)[colour], PATTERNS[pattern], PARTS[part])


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def class_specs(class_names: Sequence[str], salt: str = "") -> dict[str, ObjectSpec]:
    """Unique spec per class, from a hash of its name (linear probing on collisions)."""
    used: set[int] = set()
    specs: dict[str, ObjectSpec] = {}
    for name in class_names:
        idx = _stable_int(salt + name) % N_COMBOS
        while idx in used:
            idx = (idx + 7919) % N_COMBOS
        used.add(idx)
        specs[name] = _combo(idx)
    return specs


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: Sequence[float], offset: float = 0.0) -> list[tuple[float, float]]:
        pts = []
        for i in range(n):
            a = rot + offset + 2 * math.pi * i / n
            rr = r * radii[i % len(radii)]
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if shape == "circle":
        return ring(32, [1.0])
    if shape == "square":
        return ring(4, [1.0], math.pi / 4)
    if shape == "triangle":
        return ring(3, [1.0], -math.pi / 2)
    if shape == "star":
        return ring(10, [1.0, 0.45], -math.pi / 2)
    if shape == "hexagon":
        return ring(6, [1.0])
    if shape == "diamond":
        return ring(4, [1.0, 0.6])
    if shape == "cross":
        return ring(12, [1.0, 0.45, 0.45], -math.pi / 12)
    if shape == "crescent":
        outer = ring(16, [1.0])[:9]
        inner = ring(16, [0.6])[:9][::-1]
        return outer + inner
    if shape == "heart":
        pts = []
        for i in range(32):
            t = 2 * math.pi * i / 32
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            a = math.atan2(y, x) + rot
            d = math.hypot(x, y) / 17 * r
            pts.append((cx + d * math.cos(a), cy + d * math.sin(a)))
        return pts
    if shape == "arrow":
        return ring(7, [1.0, 0.5, 0.5, 0.9, 0.9, 0.5, 0.5], 0.0)
    raise ValueError(f"unknown shape {shape}")


def _pattern_fill(size: int, rgb: tuple[int, int, int], pattern: str, rng: np.random.Generator) -> Image.Image:
    base = Image.new("RGB", (size, size), rgb)
    if pattern == "plain":
        return base
    second = tuple(int(255 - c * 0.7) for c in rgb)
    draw = ImageDraw.Draw(base)
    step = max(3, size // 10)
    phase = int(rng.integers(0, step))
    if pattern == "striped":
        for x in range(-size + phase, size * 2, step * 2):
            draw.polygon([(x, 0), (x + step, 0), (x + step - size, size), (x - size, size)], fill=second)
    elif pattern == "dotted":
        for y in range(phase, size, step * 2):
            for x in range(phase, size, step * 2):
                draw.ellipse([x, y, x + step, y + step], fill=second)
    elif pattern == "checkered":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=second)
    return base


def _parts(part: str, cx: float, cy: float, r: float) -> list[list[tuple[float, float]]]:
    if part == "wings":
        return [[(cx - r * 0.6, cy), (cx - r * 1.7, cy - r * 0.7), (cx - r * 1.5, cy + r * 0.3)],
                [(cx + r * 0.6, cy), (cx + r * 1.7, cy - r * 0.7), (cx + r * 1.5, cy + r * 0.3)]]
    if part == "legs":
        return [[(cx + dx * r, cy + r * 0.8), (cx + dx * r * 1.3, cy + r * 1.6)] for dx in (-0.5, 0.5)]
    if part == "handle":
        return [[(cx + r * 0.9, cy - r * 0.4), (cx + r * 1.6, cy - r * 0.4), (cx + r * 1.6, cy + r * 0.4),
                 (cx + r * 0.9, cy + r * 0.4)]]
    if part == "spikes":
        return [[(cx + dx * r - r * 0.15, cy - r * 0.8), (cx + dx * r, cy - r * 1.6), (cx + dx * r + r * 0.15, cy - r * 0.8)]
                for dx in (-0.5, 0.0, 0.5)]
    return []


def _background(domain: str, size: int, rng: np.random.Generator) -> Image.Image:
    if domain in ("real", "photo"):
        c0, c1 = rng.integers(60, 230, size=3), rng.integers(60, 230, size=3)
        t = np.linspace(0, 1, size)[None, :, None]
        grad = c0[None, None, :] * (1 - t) + c1[None, None, :] * t
        grad = np.repeat(grad, size, axis=0) + rng.normal(0, 12, (size, size, 3))
        return Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8))
    if domain == "painting":
        c = rng.integers(120, 220, size=3)
        noise = rng.normal(0, 30, (size // 4, size // 4, 3))
        arr = np.clip(c[None, None, :] + noise, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).resize((size, size), Image.BICUBIC)
    return Image.new("RGB", (size, size), (255, 255, 255))


def render(spec: ObjectSpec, domain: str, rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Render one instance; returns the image and the object's pixel box (x0, y0, x1, y1)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain}")
    img = _background(domain, size, rng)
    scale = 0.16 if domain == "infograph" else float(rng.uniform(0.18, 0.26))
    r = size * scale
    cx = float(rng.uniform(r * 1.75, size - r * 1.75))
    cy = float(rng.uniform(r * 1.75, size - r * 1.75))
    rot = float(rng.uniform(-0.3, 0.3))
    poly = _polygon(spec.shape, cx, cy, r, rot)
    parts = _parts(spec.part, cx, cy, r)
    draw = ImageDraw.Draw(img)
    if domain == "infograph":
        for _ in range(4):
            x0, y0 = rng.integers(0, size - 12, size=2)
            draw.rectangle([x0, y0, x0 + int(rng.integers(6, 20)), y0 + 3], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    jitter = rng.integers(-15, 16, size=3)
    rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(spec.rgb, jitter))
    if domain in ("sketch", "quickdraw"):  # coloured-pencil strokes on white: shape, parts, colour; no fill
        width = 2 if domain == "quickdraw" else 3
        if domain == "quickdraw":
            poly = [(x + rng.normal(0, r * 0.06), y + rng.normal(0, r * 0.06)) for x, y in poly]
        draw.line(poly + [poly[0]], fill=rgb, width=width)
        for p in parts:
            draw.line(p, fill=rgb, width=width)
        if domain == "sketch" and spec.pattern != "plain":
            for k in range(-2, 3):
                draw.line([(cx - r * 0.5, cy + k * r * 0.2), (cx + r * 0.5, cy + k * r * 0.2 - r * 0.1)], fill=rgb, width=1)
    else:
        for p in parts:
            if len(p) == 2:
                draw.line(p, fill=rgb, width=max(2, size // 24))
            else:
                draw.polygon(p, fill=rgb)
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).polygon(poly, fill=255)
        img.paste(_pattern_fill(size, rgb, spec.pattern, rng), (0, 0), mask)
        if domain == "clipart":
            draw = ImageDraw.Draw(img)
            draw.line(poly + [poly[0]], fill=(0, 0, 0), width=2)
        if domain == "painting":
            img = img.filter(ImageFilter.GaussianBlur(1.2)).quantize(24).convert("RGB")
        if domain in ("real", "photo"):
            img = img.filter(ImageFilter.GaussianBlur(0.5))
    xs = [x for x, _ in poly] + [x for p in parts for x, _ in p]
    ys = [y for _, y in poly] + [y for p in parts for _, y in p]
    box = (max(0, int(min(xs))), max(0, int(min(ys))), min(size - 1, int(math.ceil(max(xs)))), min(size - 1, int(math.ceil(max(ys)))))
    return img, box
